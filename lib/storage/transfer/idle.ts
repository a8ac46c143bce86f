/**
 * Idle timeouts for transfers: `backend-operation-timeout` aborts a request
 * that made no progress for that long, never one that is merely long.
 *
 * @module
 */

/** A running idle watch: `touch()` on progress, `stop()` when the request ends. */
export interface IdleWatch {
  touch(): void;
  stop(): void;
}

/**
 * Calls `onIdle` once no {@link IdleWatch.touch} happened for `ms`
 * milliseconds. A touch costs one clock read: a single timer checks the time
 * of the last progress when it fires and re-arms for the rest, instead of a
 * clear/set pair per chunk. `ms ≤ 0` disables the watch.
 *
 * @example
 * ```ts
 * const watch = idleWatch(30_000, () => controller.abort(new Error("no data for 30 s")));
 * for await (const chunk of body) watch.touch();
 * watch.stop();
 * ```
 */
export function idleWatch(ms: number, onIdle: () => void): IdleWatch {
  if (!(ms > 0)) return { touch() {}, stop() {} };
  let last = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const check = () => {
    const quiet = performance.now() - last;
    if (quiet >= ms) onIdle();
    else timer = setTimeout(check, ms - quiet);
  };
  timer = setTimeout(check, ms);
  return {
    touch() {
      last = performance.now();
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
