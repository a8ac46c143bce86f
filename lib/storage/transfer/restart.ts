/**
 * A download that restarts when the object is replaced before its first
 * byte was handed out: a restore racing a re-save of the same key then gets
 * the new object whole instead of failing. Ranges are pinned to the version
 * the download started with (ETag, generation), so once bytes went out a
 * replacement can only end the stream with a clear error, never mix two
 * versions.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import { backoffDelay, DEFAULT_RETRY_POLICY, sleep } from "./retry.ts";

/** Restarts per download (a key re-saved again and again gives up with the clear error). */
export const MAX_RESTARTS = 4;
/** Upper bound of the first wait before a restart in ms (doubles, full jitter): racing saves get to finish. */
export const RESTART_BASE_MS = 200;

/**
 * True for the "replaced during the download" errors the backends raise on
 * a failed ETag/generation precondition.
 *
 * @example
 * ```ts
 * isReplaced(new Error("the object was replaced during the download: restore again")); // true
 * ```
 */
export function isReplaced(err: unknown): boolean {
  return err instanceof Error &&
    /replaced during the download|changed while it was being read/.test(err.message);
}

/**
 * Wraps `open` (one pinned download) in a stream that re-opens it when it
 * fails with {@link isReplaced} before any byte was emitted, at most
 * {@link MAX_RESTARTS} times, after a short jittered wait (saves racing it
 * get to finish), with a warn line each time.
 *
 * @example
 * ```ts
 * return await restartingGet(() => this.#getOnce(name, options), { log, backend: "s3", object: name });
 * ```
 */
export async function restartingGet(
  open: () => Promise<ReadableStream<Uint8Array>>,
  what: { log?: Logger; backend: string; object: string },
): Promise<ReadableStream<Uint8Array>> {
  let reader = (await open()).getReader();
  let emitted = false;
  let restarts = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        try {
          const { done, value } = await reader.read();
          if (done) return controller.close();
          emitted = true;
          controller.enqueue(value);
          return;
        } catch (err) {
          if (emitted || !isReplaced(err) || restarts >= MAX_RESTARTS) throw err;
          const wait = backoffDelay(restarts, { ...DEFAULT_RETRY_POLICY, baseMs: RESTART_BASE_MS });
          restarts++;
          what.log?.warn(
            `restarting the download (${restarts}/${MAX_RESTARTS}) in ${(wait / 1000).toFixed(1)} s: ` +
              `the object was replaced`,
            { backend: what.backend, object: what.object },
          );
          await sleep(wait);
          reader = (await open()).getReader();
        }
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}
