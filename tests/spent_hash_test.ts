/**
 * The digest of plain tar (and gzip) restores, hashed off the extracting
 * thread (lib/archive/spent_hash.ts): the digest before any offset is the
 * SHA-256 of those bytes however the stream was chunked and whether the
 * reader spent its chunks or not; a chunk that shares its buffer is never
 * detached under another chunk; small streams start no worker; streams that
 * are not ours are not hashed; a digest for an offset no longer held is
 * refused, not guessed; a cancelled stream stops the worker.
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { CorruptArchiveError, decompressStream } from "../lib/archive/compression.ts";
import { producerOf } from "../lib/archive/producer.ts";
import { countingWorkers, sha256, tarLike } from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** `data` as a stream of `chunk`-byte pieces, each its own buffer (as fetch and the filesystem backend hand them). */
function ownedChunks(data: Uint8Array, chunk: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= data.length) return c.close();
      c.enqueue(data.slice(at, at + chunk));
      at += chunk;
    },
  });
}

/**
 * Reads `source` through the decompression stage as the tar reader does:
 * each chunk copied out, then handed back as spent once the reader is 2 MiB
 * past it (when `spend`); when the chunk holding offset `at` arrives, asks
 * for the digest before `at`, then reads on to the end.
 */
async function digestAt(
  source: ReadableStream<Uint8Array>,
  at: number,
  spend = true,
): Promise<{ digest: string; out: Uint8Array }> {
  const { stream } = decompressStream();
  const readable = source.pipeThrough(stream);
  const reader = readable.getReader();
  const parts: Uint8Array[] = [];
  const unspent: { chunk: Uint8Array; end: number }[] = [];
  let offset = 0;
  let pending: Promise<string> | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parts.push(value.slice());
    if (!pending && at >= offset && at < offset + value.length) {
      const producer = producerOf(readable);
      assert(producer, "the decompression stage is the stream's producer");
      pending = producer.digest(offset, value.subarray(0, at - offset));
      pending.catch(() => {}); // awaited below
    }
    offset += value.length;
    unspent.push({ chunk: value, end: offset });
    while (spend && unspent.length > 0 && unspent[0].end + (2 << 20) <= offset) {
      producerOf(readable)!.recycle(unspent.shift()!.chunk);
    }
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

for (
  const [what, chunk] of [
    ["64 KiB chunks (copied into batches)", 64 << 10],
    ["1 MiB chunks that own their buffers (transferred)", 1 << 20],
    ["700-byte chunks", 700],
  ] as const
) {
  Deno.test({
    ...opts,
    name: `spent hash: ${what}: the digest is the SHA-256 of the bytes before any offset, through one worker`,
    fn: async () => {
      const data = tarLike((20 << 20) + 3000);
      const offsets = [
        0,
        1,
        chunk - 1,
        chunk,
        chunk + 1,
        5 << 20,
        (9 << 20) + 17,
        data.length - chunk,
        data.length - 1,
      ];
      for (const at of offsets) {
        for (const spend of [true, false]) {
          const { result, started, ended } = await countingWorkers(() =>
            digestAt(ownedChunks(data, chunk), at, spend)
          );
          assertEquals(result.digest, sha256(data.subarray(0, at)), `digest before ${at}, spent: ${spend}`);
          assertEquals(result.out, data, "the reader's bytes are untouched");
          // Spent chunks past 8 MiB go to the worker; chunks never spent are hashed here when the digest is asked.
          const worker = spend && at >= (10 << 20) ? 1 : 0;
          assertEquals(started, worker, `workers started, digest before ${at}, spent: ${spend}`);
          assertEquals(ended, started, "every worker stopped");
        }
      }
    },
  });
}

Deno.test({
  ...opts,
  name: "spent hash: a stream of at most 8 MiB starts no worker and its digest is right",
  fn: async () => {
    const data = tarLike(3 << 20);
    const { result, started } = await countingWorkers(() =>
      digestAt(ownedChunks(data, 64 << 10), data.length - 512)
    );
    assertEquals(result.digest, sha256(data.subarray(0, data.length - 512)));
    assertEquals(started, 0);
  },
});

Deno.test({
  ...opts,
  name: "spent hash: chunks that share one buffer are copied, never detached under the chunk beside them",
  fn: async () => {
    const data = tarLike(24 << 20);
    // Each 2 MiB buffer is handed out as two 1 MiB views: the first starts at offset 0 of a larger buffer,
    // the second does not start at 0. Transferring either would empty the other.
    let at = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(c) {
        if (at >= data.length) return c.close();
        const buf = data.slice(at, at + (2 << 20));
        c.enqueue(buf.subarray(0, 1 << 20));
        c.enqueue(buf.subarray(1 << 20));
        at += 2 << 20;
      },
    });
    const { result, started } = await countingWorkers(() => digestAt(source, data.length - 1));
    assertEquals(result.out, data, "every chunk intact");
    assertEquals(result.digest, sha256(data.subarray(0, data.length - 1)));
    assertEquals(started, 1);
  },
});

Deno.test({
  ...opts,
  name: "spent hash: a stream that is none of ours is not hashed: no worker, the digest refused",
  fn: async () => {
    const data = tarLike(20 << 20, 0x30);
    const { result, started } = await countingWorkers(() =>
      assertRejects(() => digestAt(ownedChunks(data, 1 << 20), 5 << 20), CorruptArchiveError)
    );
    assert(/PAX global header/.test(result.message), result.message);
    assertEquals(started, 0);
  },
});

Deno.test({
  ...opts,
  name: "spent hash: a digest asked where none of its chunks began is refused, not guessed",
  fn: async () => {
    const data = tarLike(20 << 20);
    const { stream } = decompressStream();
    const readable = ownedChunks(data, 1 << 20).pipeThrough(stream);
    const reader = readable.getReader();
    let offset = 0;
    for (let i = 0; i < 14; i++) {
      const { value } = await reader.read();
      offset += value!.length;
      if (i >= 2) producerOf(readable)!.recycle(new Uint8Array(0)); // not one of its chunks: ignored
    }
    const producer = producerOf(readable)!;
    // Not a chunk boundary: the bytes before it cannot be told apart from the chunk's.
    const err = await assertRejects(
      () => producer.digest(offset - (1 << 20) + 100, new Uint8Array(0)),
      CorruptArchiveError,
    );
    assert(/no hash state/.test(err.message), err.message);
    await reader.cancel();
  },
});

Deno.test({
  ...opts,
  name: "spent hash: cancelling the stream mid-way stops the worker, and a later digest rejects",
  fn: async () => {
    const data = tarLike(40 << 20);
    const { result: rejected, started, ended } = await countingWorkers(async () => {
      const { stream } = decompressStream();
      const readable = ownedChunks(data, 1 << 20).pipeThrough(stream);
      const reader = readable.getReader();
      const unspent: Uint8Array[] = [];
      for (let i = 0; i < 20; i++) {
        const { value } = await reader.read();
        unspent.push(value!);
        if (unspent.length > 2) producerOf(readable)!.recycle(unspent.shift()!);
      }
      const producer = producerOf(readable)!;
      await reader.cancel(new Error("restore failed"));
      return await producer.digest(20 << 20, new Uint8Array(0)).then(() => false, () => true);
    });
    assertEquals(started, 1, "the worker ran");
    assertEquals(ended, 1, "and was stopped");
    assert(rejected, "a digest after the cancel rejects");
  },
});
