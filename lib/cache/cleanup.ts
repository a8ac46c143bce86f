/**
 * Cancelled builds: CI systems stop a step with SIGINT or SIGTERM. Transfers
 * take {@link cancelSignal} so a signal aborts them (an S3 multipart upload is
 * aborted, Azure blocks stay uncommitted, a GCS resumable session is
 * cancelled, a filesystem temp file is removed: each backend's `put` cleans up
 * before it rejects), and whatever else must go (restore staging directories)
 * registers with {@link onCancel}. On a signal the process waits (bounded) for
 * those clean-ups, logs one line saying what was cleaned, and exits 130
 * (SIGINT) or 143 (SIGTERM).
 *
 * Also here: the age after which leftovers of a killed process (`kill -9`
 * leaves temp files and staging directories that no handler removed) are
 * swept by later saves, restores and flushes.
 *
 * @module
 */
import type { Logger } from "../log.ts";

/**
 * Leftover temp objects and staging directories older than this are swept (1 hour: no live transfer is that
 * idle). `CICACHE_STALE_AFTER_SECONDS` overrides it, for tests that kill a save and check that the next one
 * sweeps what it left without waiting an hour; not a user setting.
 */
export const STALE_AFTER_MS = staleAfterMs();

function staleAfterMs(): number {
  let raw: string | undefined;
  try {
    raw = Deno.env.get("CICACHE_STALE_AFTER_SECONDS");
  } catch {
    // no permission to read the environment: the default
  }
  return raw !== undefined && /^\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) * 1000 : 60 * 60 * 1000;
}
/** Longest wait for clean-ups after a signal before exiting anyway. */
export const CLEANUP_TIMEOUT_MS = 20_000;

/** The abort reason of a cancelled run. */
export class CancelledError extends Error {
  constructor(readonly signal: string) {
    super(`cancelled by ${signal}`);
    this.name = "CancelledError";
  }
}

interface Action {
  label: string;
  run: () => unknown;
}

let controller = new AbortController();
const actions = new Set<Action>();

/**
 * The process-wide cancellation signal: pass it to transfers.
 *
 * @example
 * ```ts
 * await backend.put(object, body, meta, { signal: cancelSignal() });
 * ```
 */
export function cancelSignal(): AbortSignal {
  return controller.signal;
}

/**
 * Registers a clean-up to run when the process is cancelled; returns the
 * function that unregisters it (call it once the thing is gone or in place).
 *
 * @example
 * ```ts
 * const done = onCancel(`staging directory ${dir}`, () => Deno.remove(dir, { recursive: true }));
 * try { … } finally { done(); }
 * ```
 */
export function onCancel(label: string, run: () => unknown): () => void {
  const action = { label, run };
  actions.add(action);
  return () => void actions.delete(action);
}

/**
 * Aborts {@link cancelSignal} and runs every registered clean-up (at most
 * {@link CLEANUP_TIMEOUT_MS}); returns the labels of those that finished.
 *
 * @example
 * ```ts
 * const cleaned = await cancelAndClean("SIGTERM");
 * ```
 */
export async function cancelAndClean(signal: string, timeoutMs = CLEANUP_TIMEOUT_MS): Promise<string[]> {
  controller.abort(new CancelledError(signal));
  const list = [...actions];
  actions.clear();
  const cleaned: string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled(list.map(async (a) => {
      await a.run();
      cleaned.push(a.label);
    })),
    new Promise((r) => timer = setTimeout(r, timeoutMs)),
  ]);
  clearTimeout(timer);
  return cleaned;
}

/**
 * Installs the SIGINT/SIGTERM handlers for one run: on a signal, abort and
 * clean ({@link cancelAndClean}), log one line, exit 130/143. Returns the
 * function that removes the handlers (and resets the signal for the next run
 * in the same process, as in tests). Once a signal is being handled it
 * never resolves: the aborted run must not reach its normal exit before the
 * handler has cleaned up and exited with 130/143.
 *
 * @example
 * ```ts
 * const uninstall = installSignalHandlers(log);
 * try { await saveMounts(ctx, mounts); } finally { await uninstall(); }
 * ```
 */
export function installSignalHandlers(
  log: Logger,
  exit: (code: number) => void = Deno.exit,
): () => Promise<void> {
  let handling = false;
  let handled: Promise<void> | undefined;
  const installed: [Deno.Signal, () => void][] = [];
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    const handler = () => {
      if (handling) return;
      handling = true;
      handled = handle();
    };
    const handle = async () => {
      const cleaned = await cancelAndClean(signal);
      log.error(
        `cancelled by ${signal}: in-flight transfers aborted, no partial object left; cleaned: ${
          cleaned.length > 0 ? cleaned.join("; ") : "nothing was in flight"
        }`,
      );
      exit(code);
    };
    try {
      Deno.addSignalListener(signal, handler);
      installed.push([signal, handler]);
    } catch {
      // a platform without this signal (SIGTERM on Windows)
    }
  }
  return async () => {
    if (handled) {
      await handled; // exits the process; with an injected exit (tests), then resets
    }
    for (const [signal, handler] of installed) Deno.removeSignalListener(signal, handler);
    actions.clear();
    if (controller.signal.aborted) controller = new AbortController();
  };
}

/** True for a restore staging directory of `mount`'s basename (`.<name>.cicache-<id>`, see lib/archive/unpack.ts). */
function isStagingOf(entry: string, name: string): boolean {
  return entry.startsWith(`.${name}.cicache-`) &&
    /^[0-9a-f]{8}$/.test(entry.slice(`.${name}.cicache-`.length));
}

/**
 * Removes restore staging directories of `mountPath` (siblings named
 * `.<name>.cicache-<id>`) last modified more than `olderThanMs` ago: what a
 * killed restore left. Younger ones may belong to a running restore and stay.
 * Returns the removed paths; failures are logged, never thrown.
 *
 * @example
 * ```ts
 * await sweepStaleStaging("/work/node_modules", log);
 * ```
 */
export async function sweepStaleStaging(
  mountPath: string,
  log?: Logger,
  olderThanMs = STALE_AFTER_MS,
): Promise<string[]> {
  const slash = mountPath.replace(/\/+$/, "").lastIndexOf("/");
  const parent = slash > 0 ? mountPath.slice(0, slash) : "/";
  const name = mountPath.replace(/\/+$/, "").slice(slash + 1);
  const removed: string[] = [];
  try {
    for await (const entry of Deno.readDir(parent)) {
      if (!entry.isDirectory || !isStagingOf(entry.name, name)) continue;
      const path = `${parent}/${entry.name}`;
      const info = await Deno.lstat(path).catch(() => null);
      if (!info?.mtime || Date.now() - info.mtime.getTime() < olderThanMs) continue;
      try {
        await Deno.remove(path, { recursive: true });
        removed.push(path);
      } catch (err) {
        log?.warn("could not remove a stale staging directory", { path, error: String(err) });
      }
    }
  } catch {
    // no parent directory: nothing to sweep
  }
  if (removed.length > 0) {
    log?.info("removed stale staging directories of killed restores", { paths: removed.join(",") });
  }
  return removed;
}
