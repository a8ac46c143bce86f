/**
 * The zstd decoder as the producer of the tar stream (lib/archive/producer.ts):
 * its digest of the bytes before any offset equals the SHA-256 of those bytes
 * computed here, at, before and after its output chunk boundaries; streams
 * that are not ours are not hashed; a hash state far behind the reader is
 * gone (refused, not guessed); recycled output buffers never corrupt later
 * output.
 */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { compressStream, CorruptArchiveError, decompressStream } from "../lib/archive/compression.ts";
import { producerOf, type StreamProducer } from "../lib/archive/producer.ts";
import { collect, sha256, streamOf, tarLike } from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/**
 * Reads the decompressed stream of `zst` chunk by chunk; when the chunk
 * holding offset `at` arrives, asks the producer for the digest before `at`
 * (as the extractor does on the trailer), then reads on to the end.
 */
async function digestAt(zst: Uint8Array, at: number): Promise<{ digest: string; out: Uint8Array }> {
  const { stream } = decompressStream();
  const readable = streamOf(zst, 16 << 10).pipeThrough(stream);
  const reader = readable.getReader();
  const parts: Uint8Array[] = [];
  let offset = 0;
  let pending: Promise<string> | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (!pending && at >= offset && at < offset + value.length) {
      const producer = producerOf(readable);
      assert(producer, "the zstd decoder is the stream's producer");
      pending = producer.digest(offset, value.subarray(0, at - offset));
      pending.catch(() => {}); // awaited below; a refusal must not count as unhandled before that
    }
    parts.push(value.slice());
    offset += value.length;
  }
  assert(pending, `offset ${at} was inside the stream`);
  const out = new Uint8Array(offset);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return { digest: await pending, out };
}

Deno.test({
  ...opts,
  name:
    "producer: the zstd decoder's digest is the SHA-256 of the bytes before any offset, at chunk boundaries too",
  fn: async () => {
    const data = tarLike((9 << 20) + 5000); // more than the 8 MiB decoded without the worker
    const zst = await collect(streamOf(data).pipeThrough(compressStream("zstd", -1)));
    // The decoder's output chunk boundaries, as the reader sees them.
    const sizes: number[] = [];
    for await (const c of streamOf(zst, 16 << 10).pipeThrough(decompressStream().stream)) {
      sizes.push(c.length);
    }
    assert(sizes.length >= 3, `several output chunks: ${sizes}`);
    const offsets = [0, 1, 511, 512, data.length - 1];
    let boundary = 0;
    for (const n of sizes.slice(0, -1)) {
      boundary += n;
      offsets.push(boundary - 1, boundary, boundary + 1, boundary + 512);
    }
    for (const at of offsets) {
      const { digest, out } = await digestAt(zst, at);
      assertEquals(out, data, "the output is intact");
      assertEquals(digest, sha256(data.subarray(0, at)), `digest before byte ${at}`);
    }
  },
});

Deno.test({
  ...opts,
  name: "producer: a stream not beginning with a PAX global header is not hashed (digest refused)",
  fn: async () => {
    // A regular file header first (Go plugin, GNU tar); 9 MiB, so that it is decoded by the worker.
    const data = tarLike(9 << 20, 0x30);
    const zst = await collect(streamOf(data).pipeThrough(compressStream("zstd", -1)));
    const err = await assertRejects(() => digestAt(zst, 1000), CorruptArchiveError);
    assert(/PAX global header/.test(err.message), err.message);
  },
});

Deno.test({
  ...opts,
  name:
    "producer: a small zstd archive is decoded without the worker and has no producer (the reader hashes)",
  fn: async () => {
    const data = tarLike(3 << 20); // ≈2 MiB compressed
    const zst = await collect(streamOf(data).pipeThrough(compressStream("zstd", -1)));
    assert(zst.length < 4 << 20, `${zst.length} bytes: below the inline limit`);
    const { stream } = decompressStream();
    const readable = streamOf(zst, 16 << 10).pipeThrough(stream);
    assertEquals(await collect(readable), data);
    assertEquals(producerOf(readable), undefined);
  },
});

Deno.test({
  ...opts,
  name: "producer: the hash state of a chunk far behind the reader is dropped, and the digest refused",
  fn: async () => {
    const data = new Uint8Array(24 << 20).fill(7);
    data[156] = 0x67;
    const zst = await collect(streamOf(data).pipeThrough(compressStream("zstd", -1)));
    const { stream } = decompressStream();
    const readable = streamOf(zst).pipeThrough(stream);
    const reader = readable.getReader();
    let offset = 0;
    let producer: StreamProducer | undefined;
    while (offset < 20 << 20) {
      const { value } = await reader.read();
      producer ??= producerOf(readable);
      offset += value!.length;
    }
    const err = await assertRejects(() => producer!.digest(0, new Uint8Array(0)), CorruptArchiveError);
    assert(/no hash state kept/.test(err.message), err.message);
    await reader.cancel();
  },
});

Deno.test({
  ...opts,
  name: "producer: recycled output buffers are detached here and reused there; later output stays intact",
  fn: async () => {
    const data = tarLike(12 << 20);
    const zst = await collect(streamOf(data).pipeThrough(compressStream("zstd", -1)));
    const { stream } = decompressStream();
    const readable = streamOf(zst).pipeThrough(stream);
    const hash = createHash("sha256");
    let recycled = 0;
    let total = 0;
    for await (const chunk of readable) {
      hash.update(chunk);
      total += chunk.length;
      const size = chunk.buffer.byteLength;
      producerOf(readable)!.recycle(chunk);
      if (chunk.byteLength === 0 && size > 0) recycled++;
    }
    assertEquals(total, data.length);
    assertEquals(hash.digest("hex"), sha256(data));
    assert(recycled >= 6, `full-size output buffers went back to the decoder: ${recycled}`);
  },
});
