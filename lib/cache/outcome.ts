/**
 * Per-mount outcomes of an operation, bounded concurrency over mounts, the
 * summary line each outcome gets in the log, and the step outputs a restore
 * leaves for later steps (`$DRONE_OUTPUT`, and `$GITHUB_OUTPUT` on GitHub
 * Actions).
 *
 * @module
 */
import { errorText, formatBytes, type Logger, mibPerSecond } from "../log.ts";

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

/**
 * The compression ratio (raw / stored) with two significant digits, so a
 * tiny or huge ratio never shows as `0`.
 *
 * @example
 * ```ts
 * compressionRatio(121_500_000, 91_900_000); // 1.3
 * ```
 */
export function compressionRatio(rawBytes: number, storedBytes: number): number {
  return Number((rawBytes / storedBytes).toPrecision(2));
}

/**
 * `115.9 MiB → 87.7 MiB stored`: the raw size, then what the store holds.
 *
 * @example
 * ```ts
 * describeSizes(2048, 1024); // "2.0 KiB → 1.0 KiB stored"
 * ```
 */
export function describeSizes(rawBytes: number, storedBytes: number): string {
  return `${formatBytes(rawBytes)} → ${formatBytes(storedBytes)} stored`;
}

/**
 * Logs one line per mount: outcome, sizes (human strings; JSON logs also
 * carry the raw byte counts), ratio, time and throughput in MiB/s (the unit
 * of the sizes).
 */
export function logOutcome(log: Logger, op: "save" | "restore", o: MountOutcome): void {
  const fields: Record<string, unknown> = { mount: o.mount, object: o.object, status: o.status };
  const json = log.format === "json";
  if (o.rawBytes !== undefined) {
    fields.size = formatBytes(o.rawBytes);
    if (json) fields.size_bytes = o.rawBytes;
  }
  if (o.storedBytes !== undefined) {
    fields.stored = formatBytes(o.storedBytes);
    if (json) fields.stored_bytes = o.storedBytes;
  }
  if (o.rawBytes && o.storedBytes) fields.ratio = compressionRatio(o.rawBytes, o.storedBytes);
  if (o.files !== undefined) fields.files = o.files;
  if (o.seconds !== undefined) {
    fields.seconds = Number(o.seconds.toFixed(2));
    if (o.storedBytes) fields.mib_per_s = mibPerSecond(o.storedBytes, o.seconds);
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

/** What a restore achieved, for the step outputs: `failed` when nothing was restored because of errors. */
export type CacheState = "complete" | "partial" | "miss" | "failed";

/** The step outputs of a restore. */
export interface StepOutputs {
  /** The exact key was found and every mount restored. */
  hit: boolean;
  state: CacheState;
  /** The key the restored objects were saved under; empty on a miss or failure. */
  matchedKey: string;
  /** The rendered key that was asked for. */
  primaryKey: string;
}

/**
 * The cache state of a restore from its per-mount outcomes: `complete` when
 * every mount was restored, `partial` when some were, `failed` when none
 * was and at least one failed, else `miss`.
 *
 * @example
 * ```ts
 * cacheState([{ mount: "a", object: "k/a", status: "miss" }]); // "miss"
 * ```
 */
export function cacheState(outcomes: readonly MountOutcome[]): CacheState {
  const restored = outcomes.filter((o) => o.status === "restored").length;
  if (restored > 0) return restored === outcomes.length ? "complete" : "partial";
  return outcomes.some((o) => o.status === "failed") ? "failed" : "miss";
}

/**
 * Appends the step outputs, always all of them: `cache_hit`, `cache_state`
 * and `cache_key_matched` (empty on a miss) to `$DRONE_OUTPUT` (Drone,
 * Harness), and `cache-hit`, `cache-state`, `cache-primary-key` and
 * `cache-matched-key` to `$GITHUB_OUTPUT` (GitHub Actions, names as
 * `actions/cache/restore`). A file that cannot be written is logged, never
 * fatal.
 *
 * @example
 * ```ts
 * await writeStepOutputs(env, log, { hit: true, state: "complete", matchedKey: "k", primaryKey: "k" });
 * ```
 */
export async function writeStepOutputs(
  env: Record<string, string | undefined>,
  log: Logger,
  out: StepOutputs,
): Promise<void> {
  const oneLine = (v: string) => v.replace(/[\r\n]/g, "");
  const files: [string | undefined, string[]][] = [
    [env.DRONE_OUTPUT, [
      `cache_hit=${out.hit}`,
      `cache_state=${out.state}`,
      `cache_key_matched=${oneLine(out.matchedKey)}`,
    ]],
    [env.GITHUB_OUTPUT, [
      `cache-hit=${out.hit}`,
      `cache-state=${out.state}`,
      `cache-primary-key=${oneLine(out.primaryKey)}`,
      `cache-matched-key=${oneLine(out.matchedKey)}`,
    ]],
  ];
  for (const [file, lines] of files) {
    if (!file) continue;
    try {
      await Deno.writeTextFile(file, lines.join("\n") + "\n", { append: true, create: true, mode: 0o644 });
    } catch (err) {
      log.error("could not write step outputs", { file, error: reasonOf(err) });
    }
  }
}
