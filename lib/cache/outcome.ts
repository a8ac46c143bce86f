/**
 * Per-mount outcomes of an operation, bounded concurrency over mounts, and the
 * summary line each outcome gets in the log.
 *
 * @module
 */
import { errorText, formatBytes, type Logger } from "../log.ts";

/** What happened to one mount. */
export interface MountOutcome {
  mount: string;
  object: string;
  status: "saved" | "skipped" | "restored" | "miss" | "failed";
  /** Why it was skipped, missed or failed. */
  reason?: string;
  /** Uncompressed tar bytes (save) or regular file bytes (restore). */
  rawBytes?: number;
  /** Bytes stored in or read from the backend. */
  storedBytes?: number;
  files?: number;
  seconds?: number;
  /** Absolute path the mount was restored to. */
  target?: string;
  /** Restore: the archive carried our integrity trailer and it matched. */
  verified?: boolean;
}

/**
 * Runs `fn` over `items` with at most `limit` in flight, keeping order in the
 * results. Errors are the callback's to handle: it must not throw.
 *
 * @example
 * ```ts
 * const sizes = await mapBounded(["a", "b"], 2, async (m) => m.length);
 * ```
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Logs one line per mount: outcome, sizes, ratio, time and throughput. */
export function logOutcome(log: Logger, op: "save" | "restore", o: MountOutcome): void {
  const fields: Record<string, unknown> = { mount: o.mount, object: o.object, status: o.status };
  if (o.rawBytes !== undefined) fields.size = formatBytes(o.rawBytes);
  if (o.storedBytes !== undefined) fields.stored = formatBytes(o.storedBytes);
  if (o.rawBytes && o.storedBytes) fields.ratio = Number((o.rawBytes / o.storedBytes).toFixed(2));
  if (o.files !== undefined) fields.files = o.files;
  if (o.seconds !== undefined) {
    fields.seconds = Number(o.seconds.toFixed(2));
    if (o.storedBytes) fields.mb_per_s = Number((o.storedBytes / 1e6 / Math.max(o.seconds, 1e-3)).toFixed(1));
  }
  if (o.target) fields.target = o.target;
  if (o.verified !== undefined) fields.verified = o.verified;
  if (o.reason) fields.reason = o.reason;
  const verb = {
    saved: "saved",
    skipped: "skipped",
    restored: "restored",
    miss: "cache miss",
    failed: "failed",
  };
  const level = o.status === "failed" ? "error" : o.status === "miss" ? "warn" : "info";
  log[level](`${op}: ${verb[o.status]} ${o.mount}`, fields);
}

/** The reason text of an error, for outcomes. */
export function reasonOf(err: unknown): string {
  return errorText(err);
}
