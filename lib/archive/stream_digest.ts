/**
 * The integrity digest of a tar stream computed by whoever produced the
 * stream, instead of by its reader: the zstd decoder worker sees every
 * decompressed byte before the extracting (main) thread does, so it hashes
 * them there, off the busy thread, and the extractor only asks it for the
 * digest of the bytes before the trailer once it found the trailer.
 *
 * A producer registers a {@link StreamDigest} for the readable side it hands
 * out ({@link attachDigest}); the extractor looks it up for the stream it was
 * given ({@link digestOf}). No registration (plain tar, gzip, a caller's own
 * stream): the extractor hashes on its own thread, as before.
 *
 * @module
 */

/**
 * The digest of a stream's first bytes, computed by its producer.
 *
 * The producer hashes each output chunk as it emits it and keeps the hash
 * state from before recent chunks. `digest(chunkStart, head)` asks for the
 * SHA-256 of the stream's bytes `[0, chunkStart + head.length)`: `chunkStart`
 * is the stream offset where one of its output chunks began (the chunk
 * holding the trailer header) and `head` is that chunk's bytes before the
 * trailer (the caller has them: it is reading that very chunk).
 */
export interface StreamDigest {
  /**
   * Hex SHA-256 of the bytes before `chunkStart + head.length`; null when the
   * producer did not hash this stream (it does not begin with a PAX global
   * header, so it is not one of our archives) or no longer holds the state
   * of that chunk. Rejects when the producer failed or was stopped.
   */
  digest(chunkStart: number, head: Uint8Array): Promise<string | null>;
}

const registry = new WeakMap<ReadableStream<Uint8Array>, () => StreamDigest | undefined>();

/**
 * Registers the digest source of `readable`. `source` is called when the
 * reader needs it (after the first bytes arrived) and returns undefined when
 * this stream is not hashed by its producer after all.
 *
 * @example
 * ```ts
 * attachDigest(stream.readable, () => (decoder instanceof HashingDecoder ? decoder : undefined));
 * ```
 */
export function attachDigest(
  readable: ReadableStream<Uint8Array>,
  source: () => StreamDigest | undefined,
): void {
  registry.set(readable, source);
}

/**
 * The producer's digest of `readable`, when it computes one (see
 * {@link attachDigest}); ask only once the first chunk was read.
 *
 * @example
 * ```ts
 * const remote = digestOf(tar); // undefined: hash the bytes here
 * ```
 */
export function digestOf(readable: ReadableStream<Uint8Array>): StreamDigest | undefined {
  return registry.get(readable)?.();
}
