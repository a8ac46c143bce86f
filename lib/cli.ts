/**
 * The command: settings → logger → key → backend → save, restore or flush,
 * and the exit code rules of DESIGN §5 (compatible with A§2.1): cache
 * failures and misses log `[IMPORTANT] …` and exit 0 unless `exit-code` is
 * set; settings errors exit 1 always; `fail-restore-if-key-not-present`
 * makes a miss fail the step.
 *
 * @module
 */
import { errorText, formatBytes, Logger, type Sink, stderrSink } from "./log.ts";
import type { MountOutcome } from "./cache/outcome.ts";
import {
  helpText,
  loadSettings,
  secretValues,
  SETTING_SPECS,
  type Settings,
  SettingsError,
} from "./settings.ts";
import { VERSION } from "./version.ts";
import { checkKeyTemplate, renderKey, renderRestoreKeys } from "./key/key.ts";
import { openBackend } from "./storage/open.ts";
import { isStorageError } from "./storage/backend.ts";
import { type OpContext, saveMounts } from "./cache/save.ts";
import { restoreMounts } from "./cache/restore.ts";
import { installSignalHandlers } from "./cache/cleanup.ts";
import { flush } from "./cache/flush.ts";

/** Where `run` writes; tests capture both. */
export interface RunOptions {
  cwd?: string;
  /** Log lines (stderr by default). */
  sink?: Sink;
  /** `--help`/`--version` output (stdout by default). */
  print?: (text: string) => void;
}

/**
 * Runs ci-cache with command-line arguments and an environment, and returns
 * the exit code. Never calls `Deno.exit`.
 *
 * @example
 * ```ts
 * const code = await run(["save", "node_modules"], { PLUGIN_BACKEND: "filesystem" });
 * ```
 */
export async function run(
  args: readonly string[],
  env: Record<string, string | undefined>,
  options: RunOptions = {},
): Promise<number> {
  const sink = options.sink ?? stderrSink;
  const print = options.print ?? ((text: string) => console.log(text));
  let settings: Settings;
  try {
    const loaded = loadSettings(args, env);
    if (loaded.kind === "help") {
      print(helpText(VERSION));
      return 0;
    }
    if (loaded.kind === "version") {
      print(`ci-cache ${VERSION}`);
      return 0;
    }
    settings = loaded.settings;
  } catch (err) {
    const log = new Logger({ sink });
    log.error("invalid settings", { error: errorText(err), help: "run ci-cache --help for every setting" });
    return 1;
  }

  const log = new Logger({
    level: settings.debug ? "debug" : settings.logLevel as "error" | "warn" | "info" | "debug",
    format: settings.logFormat as "logfmt" | "json",
    sink,
    secrets: secretValues(settings),
  });
  try {
    return await execute(settings, env, options.cwd ?? Deno.cwd(), log);
  } catch (err) {
    if (err instanceof SettingsError) {
      log.error("invalid settings", { error: err.message, help: "run ci-cache --help for every setting" });
      return 1;
    }
    log.error(`[IMPORTANT] ${settings.mode} cache failed`, { error: errorText(err) });
    return settings.exitCode ? 1 : 0;
  }
}

async function execute(
  settings: Settings,
  env: Record<string, string | undefined>,
  cwd: string,
  log: Logger,
): Promise<number> {
  if (log.enabled("debug")) log.debug("settings", describeSettings(settings));
  if (settings.autoDetect) {
    log.warn(
      "auto-detect (PLUGIN_AUTO_CACHE) is not supported by ci-cache yet: using the given mounts and key",
    );
  }
  if (settings.mode === "save" && settings.mount.length === 0) {
    throw new SettingsError("nothing to save: set PLUGIN_MOUNT (or --mount, or give mounts as arguments)");
  }
  checkKeyTemplate(settings);

  let backend;
  try {
    backend = await openBackend(settings, log);
  } catch (err) {
    if (err instanceof SettingsError) throw err;
    // Backend setup failures fail the step (exit 1), as in the Go plugin: the settings must be fixed.
    log.error("could not set up the storage backend", {
      backend: settings.backend,
      error: errorText(err),
      ...(isStorageError(err) ? { kind: err.code } : {}),
    });
    return 1;
  }
  // SIGINT/SIGTERM abort the transfers, clean up, log one line and exit 130/143.
  const uninstall = installSignalHandlers(log);
  try {
    const key = await renderKey(settings, log);
    const ctx: OpContext = { settings, backend, log, key, env, cwd };
    log.info(`${settings.mode} started`, { key, backend: backend.kind, mounts: settings.mount.join(",") });
    switch (settings.mode) {
      case "save":
        return await runSave(ctx);
      case "restore":
        return await runRestore(ctx);
      case "flush":
        return await runFlush(ctx);
      default:
        throw new SettingsError(`unknown mode ${settings.mode}`);
    }
  } finally {
    await uninstall();
    await backend.close?.();
  }
}

async function runSave(ctx: OpContext): Promise<number> {
  const outcomes = await saveMounts(ctx, ctx.settings.mount);
  const count = (s: string) => outcomes.filter((o) => o.status === s).length;
  const failed = outcomes.filter((o) => o.status === "failed");
  ctx.log.info("save done", {
    key: ctx.key,
    saved: count("saved"),
    skipped: count("skipped"),
    failed: failed.length,
    mounts: summarize(outcomes),
  });
  if (failed.length === 0) return 0;
  ctx.log.error(`[IMPORTANT] build cache, ${failed.length} of ${outcomes.length} mounts failed`, {
    failed: failed.map((o) => `${o.mount}: ${o.reason}`).join("; "),
  });
  return ctx.settings.exitCode ? 1 : 0;
}

async function runRestore(ctx: OpContext): Promise<number> {
  const { settings } = ctx;
  const result = await restoreMounts(ctx, settings.mount, await renderRestoreKeys(settings, ctx.log));
  const restored = result.outcomes.filter((o) => o.status === "restored").length;
  const total = result.outcomes.length;
  ctx.log.info("restore done", {
    key: ctx.key,
    match: result.match,
    matched_key: result.matchedKey,
    restored,
    of: total,
    mounts: summarize(result.outcomes),
  });
  if (result.match === "miss" || restored === 0) {
    ctx.log.error(`[IMPORTANT] restore cache, cache miss for key ${ctx.key}`, {
      reasons: result.outcomes.map((o) => `${o.mount}: ${o.reason}`).join("; ") || undefined,
    });
    return settings.exitCode || settings.failRestoreIfKeyNotPresent ? 1 : 0;
  }
  if (restored < total) {
    ctx.log.error(`[IMPORTANT] restore cache, partially restored (${restored}/${total} mounts)`, {
      failed: result.outcomes.filter((o) => o.status !== "restored").map((o) => `${o.mount}: ${o.reason}`)
        .join("; "),
    });
    return settings.exitCode ? 1 : 0;
  }
  return 0;
}

async function runFlush(ctx: OpContext): Promise<number> {
  const result = await flush(ctx);
  if (result.failed === 0) return 0;
  ctx.log.error(`[IMPORTANT] flush cache, ${result.failed} objects could not be deleted`);
  return ctx.settings.exitCode ? 1 : 0;
}

/** One `mount: outcome (sizes)` item per mount, for the summary line. */
function summarize(outcomes: readonly MountOutcome[]): string {
  return outcomes.map((o) => {
    const sizes = o.rawBytes !== undefined && o.storedBytes !== undefined
      ? ` ${formatBytes(o.rawBytes)}/${formatBytes(o.storedBytes)}`
      : "";
    return `${o.mount}: ${o.status}${sizes}${
      o.status === "failed" || o.status === "miss" ? ` (${o.reason})` : ""
    }`;
  }).join("; ");
}

/** Settings that differ from their defaults, secrets masked, for `--debug`. */
function describeSettings(settings: Settings): Record<string, unknown> {
  const out: Record<string, unknown> = { mode: settings.mode, backend: settings.backend };
  for (const spec of SETTING_SPECS) {
    if (settings.source[spec.key] === "default") continue;
    const value = (settings as unknown as Record<string, unknown>)[spec.key];
    out[spec.flag] = spec.secret ? "***" : value;
  }
  return out;
}
