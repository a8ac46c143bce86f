/**
 * Reading a response body under an attempt's signal, so an idle timeout or
 * a cancel always ends the read, whatever the HTTP client does with the
 * signal.
 *
 * Why not just pass the signal to `fetch`: in Deno (2.9) the abort of a
 * fetch whose `Response` object was already garbage-collected (only its body
 * stream kept, as the AWS SDK and our range readers do) does not reach the
 * body: a read pending on a stalled connection stays pending forever. That was
 * the intermittent "stalled download range" hang (it depended on when the GC
 * ran). Here the pending read is raced against the signal, and the body is
 * cancelled (its connection closed) on abort.
 *
 * @module
 */

/**
 * Yields the chunks of `body`, calling `touch` on each (progress for the
 * idle watch). When `signal` aborts, the pending read is abandoned, the body
 * is cancelled (closing its connection) and the signal's reason is thrown.
 *
 * @example
 * ```ts
 * for await (const chunk of guardedChunks(res.body!, attempt.signal, attempt.touch)) chunks.push(chunk);
 * ```
 */
export async function* guardedChunks(
  body: ReadableStream<Uint8Array>,
  signal: AbortSignal,
  touch: () => void = () => {},
): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  const aborted = Promise.withResolvers<never>();
  aborted.promise.catch(() => {});
  const onAbort = () => {
    aborted.reject(signal.reason);
    reader.cancel(signal.reason).catch(() => {});
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  let finished = false;
  try {
    for (;;) {
      const read = reader.read();
      read.catch(() => {}); // may settle after an abort: nobody waits for it then
      const { done, value } = await Promise.race([read, aborted.promise]);
      if (done) {
        finished = true;
        return;
      }
      touch();
      yield value;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    if (!finished) reader.cancel(signal.reason).catch(() => {});
    else reader.releaseLock();
  }
}

/**
 * Reads exactly `want` bytes of a ranged response through
 * {@link guardedChunks}, as the chunks the connection delivered (no copy).
 * More bytes than asked, or fewer (a connection closed early, a truncated
 * body), is an error whose message says so; callers retry it.
 *
 * @example
 * ```ts
 * const chunks = await readRange(res.body!, 8 * 2 ** 20, attempt.signal, attempt.touch);
 * ```
 */
export async function readRange(
  body: ReadableStream<Uint8Array>,
  want: number,
  signal: AbortSignal,
  touch: () => void,
): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  await streamRange(body, want, { begin: () => (chunk) => chunks.push(chunk) }, signal, touch);
  return chunks;
}

/** Receives one range's bytes from the backend's read attempts. */
export interface RangeSink {
  /**
   * A new attempt starts reading the range from its first byte: returns
   * where that attempt's chunks go. From then on, chunks an earlier attempt
   * still pushes are dropped: a retry abandons an aborted attempt without
   * waiting for it (its HTTP client may settle late, see `retry.ts`), and
   * its late bytes must not move the new attempt's place in the range.
   */
  begin(): (chunk: Uint8Array) => void;
}

/**
 * Reads `body` (a ranged response) into `sink` as one attempt (it calls
 * {@link RangeSink.begin}), calling `touch` on each chunk, and checks that
 * exactly `want` bytes came (else a {@link ShortReadError}, which the retry
 * treats as transient). An attempt whose signal already aborted (abandoned
 * by its retry) throws before it begins, so it cannot restart the range
 * under the attempt that replaced it.
 *
 * @example
 * ```ts
 * await streamRange(res.body!, count, sink, attempt.signal, attempt.touch);
 * ```
 */
export async function streamRange(
  body: ReadableStream<Uint8Array>,
  want: number,
  sink: RangeSink,
  signal: AbortSignal,
  touch: () => void,
): Promise<void> {
  if (signal.aborted) {
    await body.cancel(signal.reason).catch(() => {});
    throw signal.reason;
  }
  const push = sink.begin();
  let got = 0;
  for await (const chunk of guardedChunks(body, signal, touch)) {
    got += chunk.length;
    if (got > want) throw new ShortReadError(`the server sent more bytes than the range asked for (${want})`);
    push(chunk);
  }
  if (got !== want) throw new ShortReadError(`short read: ${got} of ${want} bytes (connection closed early)`);
}

/** A body that ended before (or went past) the length it announced: transient, worth a retry. */
export class ShortReadError extends Error {
  readonly code = "ECONNRESET";
  constructor(message: string) {
    super(message);
    this.name = "ShortReadError";
  }
}
