/**
 * What the producer of a tar stream can do for its reader beyond handing
 * over bytes: compute the integrity digest, and take spent chunks back.
 *
 * The zstd decoder worker sees every decompressed byte before the extracting
 * (main) thread does, so it hashes them there, off the busy thread, and the
 * extractor only asks it for the digest of the bytes before the trailer once
 * it found the trailer. The worker writes its output into 1 MiB buffers;
 * handing them back once extracted spares it a fresh, zero-filled buffer
 * (page faults, in the thread that now also hashes) per MiB.
 *
 * Plain tar and gzip output is hashed the same way by a worker of
 * spent_hash.ts, fed the chunks once the reader spent them.
 *
 * A producer registers a {@link StreamProducer} for the readable side it
 * hands out ({@link attachProducer}); the extractor looks it up for the
 * stream it was given ({@link producerOf}). No registration (a small zstd
 * archive decoded on the calling thread, a caller's own stream): the
 * extractor hashes on its own thread.
 *
 * @module
 */

/**
 * The producer's services. `digest(chunkStart, head)` asks for the SHA-256
 * of the stream's bytes `[0, chunkStart + head.length)`: `chunkStart` is the
 * stream offset where one of its output chunks began (the chunk holding the
 * trailer header) and `head` is that chunk's bytes before the trailer (the
 * caller has them: it is reading that very chunk). The producer hashes each
 * output chunk as it emits it and keeps the hash state from before recent
 * chunks.
 */
export interface StreamProducer {
  /**
   * Hex SHA-256 of the bytes before `chunkStart + head.length`. Rejects with
   * a CorruptArchiveError when the producer did not hash this stream (it
   * does not begin with a PAX global header, so it is not one of our
   * archives) or no longer holds the state of that chunk, and with the
   * producer's error when it failed or was stopped.
   */
  digest(chunkStart: number, head: Uint8Array): Promise<string>;
  /**
   * Takes back a chunk of the stream whose bytes the reader will never look
   * at again (no view of it is left anywhere): its memory is transferred
   * (detached here) and reused for later output. Chunks the producer did not
   * hand out are ignored.
   */
  recycle(chunk: Uint8Array): void;
}

const registry = new WeakMap<ReadableStream<Uint8Array>, () => StreamProducer | undefined>();

/**
 * Registers the producer of `readable`. `source` is called when the reader
 * needs it (after the first bytes arrived) and returns undefined when this
 * stream's producer offers nothing after all (another format).
 *
 * @example
 * ```ts
 * attachProducer(readable, () => (decoder instanceof SmallZstdDecoder ? decoder.worker : undefined));
 * ```
 */
export function attachProducer(
  readable: ReadableStream<Uint8Array>,
  source: () => StreamProducer | undefined,
): void {
  registry.set(readable, source);
}

/**
 * The producer of `readable`, when it registered one (see
 * {@link attachProducer}); ask only once the first chunk was read.
 *
 * @example
 * ```ts
 * const producer = producerOf(tar); // undefined: hash the bytes here
 * ```
 */
export function producerOf(readable: ReadableStream<Uint8Array>): StreamProducer | undefined {
  return registry.get(readable)?.();
}
