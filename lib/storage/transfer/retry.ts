/**
 * One retry policy for every backend: exponential backoff with full jitter,
 * capped, honouring a server's `Retry-After`, with a per-attempt idle timeout
 * (`backend-operation-timeout` aborts an attempt that made no progress for
 * that long, never one that is merely long). Every retry is logged at warn
 * level with the operation, the object, the attempt and the wait, so a slow
 * transfer explains itself.
 *
 * Jitter matters: many CI jobs restoring the same cache after an outage must
 * not retry in lock-step.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import { idleWatch } from "./idle.ts";

/** How often and how long to retry. */
export interface RetryPolicy {
  /** Retries after the first attempt (0 = no retry). */
  retries: number;
  /** Upper bound of the first delay in ms; doubles per retry. */
  baseMs: number;
  /** Cap on one delay in ms (also on a server's `Retry-After`). */
  capMs: number;
  /** Idle timeout of one attempt in ms (≤ 0: none). */
  idleMs: number;
}

/** The policy used when a backend sets nothing else. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = { retries: 4, baseMs: 500, capMs: 30_000, idleMs: 0 };

/** Raised (as the abort reason) when an attempt made no progress for the idle timeout. */
export class IdleTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`no progress for ${ms / 1000} s (backend operation timeout)`);
    this.name = "IdleTimeoutError";
  }
}

/** What one attempt receives. */
export interface Attempt {
  /** Aborted when the outer signal aborts or the attempt idles. Pass it to the request. */
  signal: AbortSignal;
  /** Call on every sign of progress (bytes sent or received). */
  touch: () => void;
  /** 0 for the first attempt. */
  number: number;
}

/** Options of {@link withRetry}. */
export interface RetryOptions {
  policy: RetryPolicy;
  /** Whether a failure is worth another attempt (network errors, 408/429/5xx, idle timeouts). */
  retryable: (err: unknown) => boolean;
  /** A server-requested wait in ms (e.g. from `Retry-After`), if the error carries one. */
  retryAfterMs?: (err: unknown) => number | undefined;
  /** Aborts everything: no further attempt, the abort reason is thrown. */
  signal?: AbortSignal;
  /** Where retry lines go (warn level). */
  log?: Logger;
  /** Names the request in retry lines and errors: backend, operation, object, part or range. */
  what: { backend: string; op: string; object?: string; part?: string };
  /** Random source in [0, 1) (tests). */
  random?: () => number;
}

/**
 * The delay before retry number `retry` (0-based): full jitter, a uniform
 * draw in [0, min(cap, base·2^retry)), never below a server's `Retry-After`
 * (itself capped).
 *
 * @example
 * ```ts
 * backoffDelay(2, DEFAULT_RETRY_POLICY, Math.random); // somewhere in [0, 2000)
 * ```
 */
export function backoffDelay(
  retry: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
  retryAfterMs?: number,
): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** retry);
  const jittered = random() * ceiling;
  if (retryAfterMs !== undefined && retryAfterMs > 0) {
    return Math.max(jittered, Math.min(retryAfterMs, policy.capMs));
  }
  return jittered;
}

/**
 * Parses an HTTP `Retry-After` value (seconds or an HTTP date) into ms.
 *
 * @example
 * ```ts
 * parseRetryAfter("3"); // 3000
 * ```
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Runs `fn` until it succeeds, retrying retryable failures with
 * {@link backoffDelay}. Each attempt gets its own signal, aborted with an
 * {@link IdleTimeoutError} when it stops making progress for
 * `policy.idleMs`, or with the outer signal's reason. The last failure is
 * rethrown as it is (an idle timeout as {@link IdleTimeoutError}); callers
 * map it to their typed storage errors.
 *
 * @example
 * ```ts
 * const body = await withRetry(async ({ signal, touch }) => {
 *   const res = await fetch(url, { signal });
 *   touch();
 *   return res;
 * }, { policy, retryable: isTransient, what: { backend: "s3", op: "get", object: name } });
 * ```
 */
export async function withRetry<T>(fn: (attempt: Attempt) => Promise<T>, options: RetryOptions): Promise<T> {
  const { policy, signal: outer } = options;
  const random = options.random ?? Math.random;
  for (let number = 0;; number++) {
    if (outer?.aborted) throw outer.reason;
    const controller = new AbortController();
    const onAbort = () => controller.abort(outer!.reason);
    outer?.addEventListener("abort", onAbort, { once: true });
    const watch = idleWatch(policy.idleMs, () => controller.abort(new IdleTimeoutError(policy.idleMs)));
    try {
      return await settledOrAborted(
        fn({ signal: controller.signal, touch: watch.touch, number }),
        controller.signal,
      );
    } catch (raw) {
      if (outer?.aborted) throw outer.reason;
      const err = controller.signal.reason instanceof IdleTimeoutError ? controller.signal.reason : raw;
      if (number >= policy.retries || !options.retryable(err)) throw err;
      const delay = backoffDelay(number, policy, random, options.retryAfterMs?.(err));
      options.log?.warn(
        `retrying (${number + 1}/${policy.retries}) in ${(delay / 1000).toFixed(1)} s: ${
          describeFailure(err)
        }`,
        { ...options.what },
      );
      await sleep(delay, outer);
    } finally {
      watch.stop();
      outer?.removeEventListener("abort", onAbort);
    }
  }
}

/**
 * `attempt`, or the signal's reason as soon as it aborts: an attempt whose HTTP client does not settle on
 * abort is abandoned instead of waited for forever; its late outcome is ignored. (Seen in Deno 2.9: the GCS
 * chunk upload, a `node:http` request on a pooled keep-alive socket whose answer never came, emitted
 * `close` but no `error` after `req.destroy()`, so its promise stayed pending and the save hung.)
 */
function settledOrAborted<T>(attempt: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    attempt.catch(() => {});
    return Promise.reject(signal.reason);
  }
  const { promise, resolve, reject } = Promise.withResolvers<T>();
  const onAbort = () => reject(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  attempt.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  return promise;
}

/** First line of an error's message, for retry lines. */
function describeFailure(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n", 1)[0];
}

/**
 * Waits `ms`, or rejects with the signal's reason when it aborts first.
 *
 * @example
 * ```ts
 * await sleep(100, controller.signal);
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
