/**
 * What the SDK-free backends (s3 and azure with static keys) share: a save
 * decides by its size whether it needs the SDK. Deno's `fetch` copies a
 * request body and frees the copy only at a later garbage collection, so a
 * multipart save of hundreds of MB over `fetch` peaks far higher (446 MB
 * against 187 MB for the bench tree) than through the SDK's `node:http`
 * path; one request of at most one part costs one copy of that part. So a
 * stream of at most {@link FETCH_PUT_MAX} (and one part) goes over `fetch`,
 * a longer one to the SDK backend, loaded on first use (its 0.2–0.3 s
 * start-up is noise there).
 *
 * @module
 */
import type { Backend, ObjectMeta, TransferOptions } from "./backend.ts";

/**
 * The largest save sent over `fetch`. Deciding holds the stream's first bytes until this many arrived (the
 * compressor cannot reuse those buffers meanwhile): with a whole 16 MiB part held, a zstd save of the bench
 * tree to Azure peaked 10–15 MB higher. 4 MiB is one compression block and covers the small caches.
 */
export const FETCH_PUT_MAX = 4 * 2 ** 20;

/**
 * Reads `body` until it ends or holds more than `limit` bytes; returns
 * whether it ended (`small`) and a stream of all its bytes (the ones read
 * first, then the rest).
 *
 * @example
 * ```ts
 * const { small, stream } = await peekSize(body, 16 * 2 ** 20);
 * ```
 */
export async function peekSize(
  body: ReadableStream<Uint8Array>,
  limit: number,
  signal?: AbortSignal,
): Promise<{ small: boolean; stream: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  const head: Uint8Array[] = [];
  let size = 0;
  let ended = false;
  try {
    while (size <= limit) {
      signal?.throwIfAborted();
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      head.push(value);
      size += value.length;
    }
    signal?.throwIfAborted();
  } catch (err) {
    reader.cancel(err).catch(() => {});
    throw err;
  }
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = head.shift();
      if (next !== undefined) return controller.enqueue(next);
      if (ended) return controller.close();
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return { small: ended, stream };
}

/**
 * A `put` that sends a stream of at most `limit` bytes (and at most
 * {@link FETCH_PUT_MAX}) with `small` and a longer one with the SDK backend
 * from `sdk` (see the module doc).
 *
 * @example
 * ```ts
 * await putBySize(body, meta, options, partSize, (s) => this.#putFetch(name, s, meta, options),
 *   () => this.#sdk());
 * ```
 */
export async function putBySize(
  name: string,
  body: ReadableStream<Uint8Array>,
  meta: ObjectMeta,
  options: TransferOptions,
  limit: number,
  small: (stream: ReadableStream<Uint8Array>) => Promise<void>,
  sdk: () => Promise<Backend>,
): Promise<void> {
  const peeked = await peekSize(body, Math.min(limit, FETCH_PUT_MAX), options.signal);
  if (peeked.small) return await small(peeked.stream);
  return await (await sdk()).put(name, peeked.stream, meta, options);
}
