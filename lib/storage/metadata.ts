/**
 * One encoding of object metadata values for every backend.
 *
 * Metadata (`cicache_root`, `cicache_mount`, …) travels as HTTP headers on
 * Azure (`x-ms-meta-*`) and S3 (`x-amz-meta-*`), and headers carry ASCII
 * only: a workspace like `/ws/日本/node_modules` would fail the save
 * ("Invalid character in header content") or go out as raw Latin-1. So
 * every backend stores a value that is not plain printable ASCII as an
 * RFC 2047 encoded word, `=?utf-8?b?<base64 of the UTF-8 bytes>?=` (the
 * form Azure objects written by ci-cache already use, and the form AWS S3
 * itself returns for non-ASCII metadata). Values that are plain ASCII are
 * stored as they are, so objects written before this encoding (and by other
 * tools) still read; decoding accepts the B and Q forms in any case.
 *
 * @module
 */
import type { ObjectMeta } from "./backend.ts";

const ENCODED = /^=\?utf-8\?([bq])\?([^?]*)\?=$/i;
const PLAIN = /^[\x20-\x7e]*$/;

/**
 * Encodes one metadata value for storage: unchanged when it is printable
 * ASCII without edge spaces (services trim those) and does not itself look
 * like an encoded word, else an RFC 2047 B-encoded word.
 *
 * @example
 * ```ts
 * encodeMetaValue("/ws/node_modules"); // "/ws/node_modules"
 * encodeMetaValue("/ws/日本");          // "=?utf-8?b?L3dzL+aXpeacrA==?="
 * ```
 */
export function encodeMetaValue(value: string): string {
  if (PLAIN.test(value) && value.trim() === value && !ENCODED.test(value)) return value;
  let bin = "";
  for (const b of new TextEncoder().encode(value)) bin += String.fromCharCode(b);
  return `=?utf-8?b?${btoa(bin)}?=`;
}

/**
 * Decodes one stored metadata value: an RFC 2047 UTF-8 word (B or Q) back to
 * text; anything else (old plain values, other tools' values) as it is.
 *
 * @example
 * ```ts
 * decodeMetaValue("=?UTF-8?B?L3dzL+aXpeacrA==?="); // "/ws/日本"
 * decodeMetaValue("/ws/node_modules");             // "/ws/node_modules"
 * ```
 */
export function decodeMetaValue(value: string): string {
  const m = ENCODED.exec(value);
  if (!m) return value;
  try {
    let bytes: Uint8Array;
    if (m[1].toLowerCase() === "b") {
      bytes = Uint8Array.from(atob(m[2]), (c) => c.charCodeAt(0));
    } else {
      const text = m[2].replaceAll("_", " ").replace(
        /=([0-9a-f]{2})/gi,
        (_x, h: string) => String.fromCharCode(parseInt(h, 16)),
      );
      bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    }
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return value; // not a valid encoded word after all: keep what is stored
  }
}

/**
 * Encodes every value of `meta` with {@link encodeMetaValue} (keys are ours and ASCII).
 *
 * @example
 * ```ts
 * await s3.send(new PutObjectCommand({ Bucket, Key, Body, Metadata: encodeMeta(meta) }));
 * ```
 */
export function encodeMeta(meta: ObjectMeta): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) out[k] = encodeMetaValue(v);
  return out;
}

/**
 * Decodes every value of stored metadata with {@link decodeMetaValue}; `null`/`undefined` values are dropped.
 *
 * @example
 * ```ts
 * const meta = decodeMeta(props.metadata);
 * ```
 */
export function decodeMeta(meta: Record<string, unknown> | undefined): ObjectMeta {
  const out: ObjectMeta = {};
  for (const [k, v] of Object.entries(meta ?? {})) {
    if (v !== null && v !== undefined) out[k] = decodeMetaValue(String(v));
  }
  return out;
}
