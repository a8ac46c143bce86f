/**
 * ChunkHasher (lib/archive/hasher.ts): the digest before any offset equals
 * the SHA-256 of those bytes computed here, for small streams (hashed from
 * kept copies, no worker) and big ones (a hashing worker), with chunks of any
 * size, the trailer at, before or after a chunk boundary and the reader up to
 * 1 MiB past it; streams that are not ours are refused; the caller may reuse
 * its chunks at once.
 */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { ChunkHasher, OFFLOAD_AFTER } from "../lib/archive/hasher.ts";
import { CorruptArchiveError } from "../lib/archive/errors.ts";
import { bytes } from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

function sha(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Cuts `data` into chunks of the sizes given in turn (cycled). */
function cut(data: Uint8Array, sizes: number[]): { start: number; data: Uint8Array }[] {
  const out: { start: number; data: Uint8Array }[] = [];
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length], data.length - at);
    out.push({ start: at, data: data.subarray(at, at + n) });
    at += n;
  }
  return out;
}

/**
 * Feeds `chunks` (each a fresh buffer, overwritten right after the hand-over as a
 * producer reusing its memory would) up to 1 MiB past `at`, and asks for the
 * digest before `at` after the chunk following the one holding it (as the
 * extractor does when it read a trailer there whose PAX data went on).
 */
async function digestAt(chunks: { start: number; data: Uint8Array }[], at: number): Promise<string> {
  const h = new ChunkHasher();
  try {
    let pending: Promise<string> | undefined;
    let holder: { start: number; data: Uint8Array } | undefined;
    for (const c of chunks) {
      if (c.start > at + (1 << 20)) break;
      const buf = c.data.slice();
      await h.chunk(buf);
      buf.fill(0xee);
      if (!holder && at >= c.start && at < c.start + c.data.length) holder = c;
      // The trailer's PAX data may go on into the next chunk: asked once that one was handed over too.
      if (holder && !pending && c !== holder) {
        pending = h.digest(holder.start, holder.data.subarray(0, at - holder.start));
      }
    }
    if (holder && !pending) pending = h.digest(holder.start, holder.data.subarray(0, at - holder.start));
    assert(pending, `offset ${at} is in the stream`);
    return await pending;
  } finally {
    h.close();
  }
}

function ours(size: number): Uint8Array {
  const data = bytes(size, 5);
  data[156] = 0x67; // a PAX global header first, as our archives begin
  return data;
}

for (
  const [label, size, sizes] of [
    ["small stream, 64 KiB chunks (no worker)", 3 << 20, [64 << 10]],
    ["small stream, irregular chunks (no worker)", 3 << 20, [100, 70_000, 4096, 1 << 20]],
    ["big stream, 1 MiB chunks (worker)", OFFLOAD_AFTER + (4 << 20), [1 << 20]],
    ["big stream, irregular chunks (worker)", OFFLOAD_AFTER + (4 << 20), [777_777, 1000, 3 << 20, 65536]],
    ["big stream, 16 MiB chunks after small ones (worker)", OFFLOAD_AFTER * 4, [1 << 20, 512, 16 << 20]],
  ] as const
) {
  Deno.test({
    ...opts,
    name: `hasher: ${label}: the digest before any offset is the SHA-256 of those bytes`,
    fn: async () => {
      const data = ours(size);
      const chunks = cut(data, [...sizes]);
      const offsets = [0, 1, 157, size - 1, OFFLOAD_AFTER - 1, OFFLOAD_AFTER + 1].filter((o) => o < size);
      for (const c of chunks.slice(1)) {
        if (offsets.length > 60) break;
        offsets.push(c.start - 512, c.start - 1, c.start, c.start + 1);
      }
      for (const at of offsets.filter((o) => o >= 0)) {
        assertEquals(await digestAt(chunks, at), sha(data.subarray(0, at)), `at ${at}`);
      }
    },
  });
}

Deno.test({
  ...opts,
  name: "hasher: a stream not beginning with a PAX global header is not verifiable, small or big",
  fn: async () => {
    for (const size of [1 << 20, OFFLOAD_AFTER + (2 << 20)]) {
      const data = ours(size);
      data[156] = 0x30; // a regular file header first
      const err = await assertRejects(() => digestAt(cut(data, [1 << 20]), size - 10), CorruptArchiveError);
      assert(/PAX global header/.test(err.message), err.message);
    }
  },
});

Deno.test({
  ...opts,
  name: "hasher: a digest asked at an offset that is no chunk start is refused",
  fn: async () => {
    const data = ours(2 << 20);
    const h = new ChunkHasher();
    try {
      for (const c of cut(data, [1 << 20])) await h.chunk(c.data);
      await assertRejects(() => h.digest(1000, new Uint8Array(0)), CorruptArchiveError);
    } finally {
      h.close();
    }
  },
});
