import { createHash } from "node:crypto";
import { md5 } from "../lib/key/md5.ts";
import { assertEquals } from "./assert.ts";

Deno.test("md5: RFC 1321 test suite", () => {
  const vectors: [string, string][] = [
    ["", "d41d8cd98f00b204e9800998ecf8427e"],
    ["a", "0cc175b9c0f1b6a831c399e269772661"],
    ["abc", "900150983cd24fb0d6963f7d28e17f72"],
    ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
    ["abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"],
    [
      "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
      "57edf4a22be3c955ac49da2e2107b67a",
    ],
  ];
  for (const [input, hex] of vectors) assertEquals(md5(input), hex, JSON.stringify(input));
});

Deno.test("md5: same as node:crypto for every length around the block edges and UTF-8 text", () => {
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256;
  for (let n = 0; n < 300; n++) {
    const bytes = Uint8Array.from({ length: n }, rnd);
    assertEquals(md5(bytes), createHash("md5").update(bytes).digest("hex"), `length ${n}`);
  }
  for (const text of ["master", "feature/日本語-ß", "🙂".repeat(40)]) {
    assertEquals(md5(text), createHash("md5").update(text).digest("hex"));
  }
});
