/**
 * Tests of `lib/storage/metadata.ts`: the one encoding of metadata values
 * (round trips, ASCII-only output, old plain values and other tools' encoded
 * words still read). The round trip through every real backend is a step of
 * the conformance suite (`backend_conformance.ts`).
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { decodeMeta, decodeMetaValue, encodeMeta, encodeMetaValue } from "../lib/storage/metadata.ts";

const VALUES = [
  "/ws/日本/node_modules",
  "C:\\Users\\Jörg\\projekt",
  "naïve café",
  " edge spaces ",
  "emoji 🧊 cache",
  "=?utf-8?b?AAAA?=",
  "",
  "plain/ascii",
];

Deno.test("metadata: every value round-trips and is stored as printable ASCII", () => {
  for (const v of VALUES) {
    const stored = encodeMetaValue(v);
    assert(/^[\x20-\x7e]*$/.test(stored), `not ASCII: ${stored}`);
    assertEquals(stored.trim(), stored);
    assertEquals(decodeMetaValue(stored), v);
  }
});

Deno.test("metadata: plain ASCII is stored as is, so old objects and the Go plugin's read unchanged", () => {
  assertEquals(encodeMetaValue("/drone/src/node_modules"), "/drone/src/node_modules");
  assertEquals(decodeMetaValue("/drone/src/node_modules"), "/drone/src/node_modules");
  assertEquals(decodeMeta({ cicache_root: "/ws", gone: undefined, n: 3 }), { cicache_root: "/ws", n: "3" });
});

Deno.test("metadata: encoded words of other writers (AWS's =?UTF-8?B?, Q form) decode; broken ones stay", () => {
  assertEquals(decodeMetaValue("=?UTF-8?B?L3dzL+aXpeacrA==?="), "/ws/日本");
  assertEquals(decodeMetaValue("=?utf-8?q?caf=C3=A9_au_lait?="), "café au lait");
  assertEquals(decodeMetaValue("=?utf-8?b?/w==?="), "=?utf-8?b?/w==?="); // 0xff is not UTF-8
  assertEquals(encodeMeta({ a: "日本" }), { a: "=?utf-8?b?5pel5pys?=" });
});
