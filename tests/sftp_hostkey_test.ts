/** Unit tests of lib/storage/sftp/hostkey.ts: known_hosts matching and fingerprints. */
import { createHash, createHmac } from "node:crypto";
import { assert, assertEquals } from "./assert.ts";
import {
  checkHostKey,
  fingerprint,
  hostMatches,
  normalizeFingerprint,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
} from "../lib/storage/sftp/hostkey.ts";

/** A syntactically valid ssh-ed25519 public key blob with `fill` as key bytes. */
function blob(fill: number): Uint8Array {
  const type = new TextEncoder().encode("ssh-ed25519");
  const out = new Uint8Array(4 + type.length + 4 + 32);
  const view = new DataView(out.buffer);
  view.setUint32(0, type.length);
  out.set(type, 4);
  view.setUint32(4 + type.length, 32);
  out.fill(fill, 8 + type.length);
  return out;
}
const b64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

Deno.test("sftp hostkey: fingerprint is OpenSSH's SHA256 form", () => {
  const key = blob(1);
  const expected = createHash("sha256").update(key).digest("base64").replace(/=+$/, "");
  assertEquals(fingerprint(key), `SHA256:${expected}`);
  assertEquals(normalizeFingerprint(` ${fingerprint(key)}= `), fingerprint(key));
  assertEquals(normalizeFingerprint("MD5:aa:bb"), undefined);
  assertEquals(normalizeFingerprint("SHA256:short"), undefined);
});

Deno.test("sftp hostkey: known_hosts patterns, ports, negation and hashed names", () => {
  assert(hostMatches("cache.example.com,10.0.0.5", "10.0.0.5"));
  assert(hostMatches("*.example.com", "cache.example.com"));
  assert(!hostMatches("*.example.com,!cache.example.com", "cache.example.com"), "negation wins");
  assert(hostMatches("[127.0.0.1]:2222", "[127.0.0.1]:2222"));
  assert(!hostMatches("127.0.0.1", "[127.0.0.1]:2222"), "a port entry differs from the plain host");
  assert(!hostMatches("cache?example.com", "cacheexample.com"));
  const salt = new Uint8Array(20).fill(9);
  const hash = createHmac("sha1", salt).update("[h]:22022").digest("base64");
  assert(hostMatches(`|1|${b64(salt)}|${hash}`, "[h]:22022"));
  assert(!hostMatches(`|1|${b64(salt)}|${hash}`, "[h]:22"));
});

Deno.test("sftp hostkey: checkHostKey accepts the known key only, honours @revoked and pins", () => {
  const good = blob(1);
  const other = blob(2);
  const text = [
    "# comment",
    `[h]:2222 ssh-ed25519 ${b64(good)} comment`,
    `@revoked * ssh-ed25519 ${b64(other)}`,
    "@cert-authority *.example.com ssh-ed25519 AAAA",
    "garbage",
  ].join("\n");
  const entries = parseKnownHosts(text);
  assertEquals(entries.length, 2);
  const policy = { knownHosts: { path: "kh", entries }, fingerprints: [] };
  assertEquals(checkHostKey(good, "h", 2222, policy), { ok: true });
  const revoked = checkHostKey(other, "h", 2222, policy);
  assert(!revoked.ok && revoked.reason.includes("@revoked"));
  const unknown = checkHostKey(good, "h", 22, policy);
  assert(!unknown.ok && unknown.reason.includes("not in the known_hosts"));
  const changed = checkHostKey(blob(3), "h", 2222, policy);
  assert(!changed.ok && changed.reason.includes("HOST KEY MISMATCH"));
  const pinned = { fingerprints: [fingerprint(good)] };
  assertEquals(checkHostKey(good, "h", 22, pinned), { ok: true });
  assert(!checkHostKey(other, "h", 22, pinned).ok);
  // Both set: both must pass.
  assert(!checkHostKey(good, "h", 2222, { ...policy, fingerprints: [fingerprint(other)] }).ok);
  assertEquals(preferredHostKeyAlgorithms(policy, "h", 2222), ["ssh-ed25519"]);
  assertEquals(preferredHostKeyAlgorithms({ fingerprints: [] }, "h", 2222), undefined);
});
