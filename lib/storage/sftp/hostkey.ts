/**
 * Host key verification for the sftp backend: SHA-256 fingerprints as
 * OpenSSH prints them (`SHA256:…`), and OpenSSH `known_hosts` files (plain,
 * `[host]:port`, hashed `|1|…` entries, `*`/`?` patterns, `!` negation and
 * `@revoked` markers; `@cert-authority` lines are not supported and
 * skipped).
 *
 * The Go plugin ignored host keys; here a known_hosts file and/or pinned
 * fingerprints are checked before any credential is sent.
 *
 * @module
 */
import { createHash, createHmac } from "node:crypto";

/**
 * The OpenSSH SHA-256 fingerprint of a public key blob (the SSH wire
 * format): `SHA256:` and unpadded base64.
 *
 * @example
 * ```ts
 * fingerprint(keyBlob); // "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
 * ```
 */
export function fingerprint(blob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** The key type named inside a public key blob (`ssh-ed25519`, `ssh-rsa`, …). */
export function keyType(blob: Uint8Array): string {
  if (blob.length < 4) return "";
  const len = new DataView(blob.buffer, blob.byteOffset, blob.byteLength).getUint32(0);
  return new TextDecoder().decode(blob.subarray(4, 4 + len));
}

/**
 * Normalises a pinned fingerprint: `SHA256:` plus unpadded base64. Returns
 * `undefined` for anything else (MD5 or hex fingerprints are refused: too
 * weak to pin).
 */
export function normalizeFingerprint(value: string): string | undefined {
  const m = /^SHA256:([A-Za-z0-9+/]{43})=?$/.exec(value.trim());
  return m ? `SHA256:${m[1]}` : undefined;
}

/** One usable line of a known_hosts file. */
export interface KnownHost {
  marker: "" | "@revoked";
  patterns: string;
  type: string;
  blob: Uint8Array;
}

/** Parses a known_hosts file's text; malformed and `@cert-authority` lines are skipped. */
export function parseKnownHosts(text: string): KnownHost[] {
  const out: KnownHost[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    let marker: KnownHost["marker"] = "";
    if (fields[0].startsWith("@")) {
      if (fields[0] !== "@revoked") continue;
      marker = "@revoked";
      fields.shift();
    }
    if (fields.length < 3) continue;
    const [patterns, type, b64] = fields;
    try {
      out.push({ marker, patterns, type, blob: Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)) });
    } catch {
      continue; // not base64
    }
  }
  return out;
}

/** `host` or `[host]:port` as known_hosts names a server. */
export function hostEntryName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$",
    "i",
  );
  return re.test(name);
}

/** Whether a known_hosts host field matches `name` (`host` or `[host]:port`). */
export function hostMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith("|1|")) {
    const [, , salt, hash] = patterns.split("|");
    if (!salt || !hash) return false;
    const mac = createHmac("sha1", Uint8Array.from(atob(salt), (c) => c.charCodeAt(0)))
      .update(name).digest("base64");
    return mac === hash;
  }
  let matched = false;
  for (const p of patterns.split(",")) {
    if (p.startsWith("!")) {
      if (globMatch(p.slice(1), name)) return false;
    } else if (globMatch(p, name)) {
      matched = true;
    }
  }
  return matched;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The outcome of checking a presented host key. */
export type HostKeyVerdict =
  | { ok: true }
  | { ok: false; reason: string };

/** What to check a host key against. */
export interface HostKeyPolicy {
  /** Entries of the known_hosts file and its path (for messages); undefined when no file is set. */
  knownHosts?: { path: string; entries: KnownHost[] };
  /** Accepted fingerprints (normalised); empty when none is pinned. */
  fingerprints: string[];
}

/**
 * Checks the key `blob` presented by `host:port` against every check the
 * policy sets (known_hosts and pinned fingerprints must each pass).
 *
 * @example
 * ```ts
 * const verdict = checkHostKey(blob, "cache.example.com", 22, { fingerprints: ["SHA256:…"] });
 * if (!verdict.ok) throw new Error(verdict.reason);
 * ```
 */
export function checkHostKey(
  blob: Uint8Array,
  host: string,
  port: number,
  policy: HostKeyPolicy,
): HostKeyVerdict {
  const fp = fingerprint(blob);
  if (policy.knownHosts) {
    const name = hostEntryName(host, port);
    const entries = policy.knownHosts.entries.filter((e) => hostMatches(e.patterns, name));
    if (entries.some((e) => e.marker === "@revoked" && sameBytes(e.blob, blob))) {
      return {
        ok: false,
        reason: `the host key ${fp} of ${name} is marked @revoked in ${policy.knownHosts.path}`,
      };
    }
    const trusted = entries.filter((e) => e.marker === "");
    if (trusted.length === 0) {
      return {
        ok: false,
        reason:
          `${name} is not in the known_hosts file ${policy.knownHosts.path} (the server presented ${fp}): ` +
          `add it (ssh-keyscan -p ${port} ${host} >> ${policy.knownHosts.path}, then check the key out of band)`,
      };
    }
    if (!trusted.some((e) => sameBytes(e.blob, blob))) {
      return {
        ok: false,
        reason: `HOST KEY MISMATCH: ${name} presented ${keyType(blob)} ${fp}, which is not the key in ` +
          `${policy.knownHosts.path}: the server was reinstalled or someone is intercepting the connection; ` +
          `verify the new key out of band before updating known_hosts`,
      };
    }
  }
  if (policy.fingerprints.length > 0 && !policy.fingerprints.includes(fp)) {
    return {
      ok: false,
      reason: `HOST KEY MISMATCH: ${host}:${port} presented ${keyType(blob)} ${fp}, not the pinned ` +
        `${
          policy.fingerprints.join(" or ")
        } (SFTP_HOST_KEY_FINGERPRINT): the server was reinstalled or someone ` +
        `is intercepting the connection; verify the new key out of band before pinning it`,
    };
  }
  return { ok: true };
}

/**
 * Host key algorithms to offer, best first, restricted to the key types
 * known_hosts holds for the host (as OpenSSH does), so that a server with
 * several host keys presents the one that can be verified.
 */
export function preferredHostKeyAlgorithms(
  policy: HostKeyPolicy,
  host: string,
  port: number,
): string[] | undefined {
  if (!policy.knownHosts) return undefined;
  const name = hostEntryName(host, port);
  const types = new Set(
    policy.knownHosts.entries.filter((e) => e.marker === "" && hostMatches(e.patterns, name)).map((e) =>
      e.type
    ),
  );
  if (types.size === 0) return undefined;
  const algorithms: string[] = [];
  for (const t of types) {
    if (t === "ssh-rsa") algorithms.push("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa");
    else algorithms.push(t);
  }
  return algorithms;
}
