/**
 * The command: settings → logger → key → backend → save, restore or flush,
 * and the exit code rules of DESIGN §5 (compatible with A§2.1): cache
 * failures and misses log `[IMPORTANT] …` and exit 0 unless `exit-code` is
 * set; settings errors exit 1 always; `fail-restore-if-key-not-present`
 * makes a miss fail the step.
 *
 * @module
 */
import { errorText, Logger, type Sink, stderrSink, type TerminalWriter } from "./log.ts";
import { cacheState, describeSizes, type MountOutcome, writeStepOutputs } from "./cache/outcome.ts";
import {
  helpText,
  loadSettings,
  NoModeError,
  secretValues,
  SETTING_SPECS,
  type Settings,
  SettingsError,
  unknownEnvWarnings,
} from "./settings.ts";
import { VERSION, versionLine } from "./version.ts";
import { checkKeyTemplate, renderKey, renderRestoreKeys } from "./key/key.ts";
import { emptyFields } from "./key/fields.ts";
import { templateData } from "./key/metadata.ts";
import { openBackend } from "./storage/open.ts";
import { isStorageError } from "./storage/backend.ts";
import { type OpContext, saveMounts } from "./cache/save.ts";
import { restoreMounts } from "./cache/restore.ts";
import { lookupCache } from "./cache/lookup.ts";
import { chooseWhatToCache, mountsToSave } from "./cache/choose.ts";
import { installSignalHandlers } from "./cache/cleanup.ts";
import { flush } from "./cache/flush.ts";
import { unsetMountVariables } from "./cache/layout.ts";

/** Where `run` writes; tests capture both. */
export interface RunOptions {
  cwd?: string;
  /** Log lines (stderr by default). */
  sink?: Sink;
  /** `--help`/`--version` output (stdout by default). */
  print?: (text: string) => void;
  /** Whether the log goes to a terminal (default: stderr is one and no sink was given). */
  terminal?: boolean;
  /** Raw terminal output: the redrawn status line, template carets (stderr by default). */
  tty?: TerminalWriter;
}

const HELP_HINT = "run ci-cache --help for every setting";

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
  const terminal = options.terminal ?? (options.sink === undefined && Deno.stderr.isTerminal());
  const logOptions = { sink, terminal, tty: options.tty };
  let settings: Settings;
  try {
    const loaded = loadSettings(args, env);
    if (loaded.kind === "help") {
      print(helpText(VERSION));
      return 0;
    }
    if (loaded.kind === "version") {
      print(await versionLine());
      return 0;
    }
    settings = loaded.settings;
  } catch (err) {
    // The settings did not parse, but the log format the user asked for still counts.
    const log = new Logger({ ...logOptions, format: requestedLogFormat(args, env) });
    warnUnknownEnv(log, env);
    if (err instanceof NoModeError) {
      // As the Go plugin: no mode is not an error, nothing runs (exit 1 only with exit-code).
      log.warn(err.message);
      return err.exitCode ? 1 : 0;
    }
    logSettingsError(log, err);
    return 1;
  }

  const log = new Logger({
    ...logOptions,
    level: settings.debug ? "debug" : settings.logLevel as "error" | "warn" | "info" | "debug",
    format: settings.logFormat as "logfmt" | "json",
    secrets: secretValues(settings),
  });
  warnUnknownEnv(log, env);
  try {
    return await execute(settings, env, options.cwd ?? Deno.cwd(), log);
  } catch (err) {
    if (err instanceof SettingsError) {
      logSettingsError(log, err);
      return 1;
    }
    const kind = isStorageError(err) ? { kind: err.code } : {};
    if (!isCacheFailure(err)) {
      // Rejected credentials, refused access, wrong backend settings: the pipeline must be fixed.
      log.error(`${settings.mode} failed: the storage backend refused the request`, {
        error: errorText(err),
        ...kind,
      });
      return 1;
    }
    log.error(`[IMPORTANT] ${settings.mode} cache failed`, { error: errorText(err), ...kind });
    return settings.exitCode ? 1 : 0;
  }
}

/** `--log-format json`, `--log.format=json` or `PLUGIN_LOG_FORMAT=json`, read leniently before parsing. */
function requestedLogFormat(
  args: readonly string[],
  env: Record<string, string | undefined>,
): "logfmt" | "json" {
  for (let i = 0; i < args.length; i++) {
    const m = /^--log[.-]format(?:=(.*))?$/.exec(args[i]);
    if (m) return (m[1] ?? args[i + 1] ?? "").toLowerCase() === "json" ? "json" : "logfmt";
  }
  const fromEnv = [env.PLUGIN_LOG_FORMAT, env.LOG_FORMAT].find((v) => v !== undefined && v !== "");
  return fromEnv?.toLowerCase() === "json" ? "json" : "logfmt";
}

function warnUnknownEnv(log: Logger, env: Record<string, string | undefined>): void {
  for (const warning of unknownEnvWarnings(env)) log.warn(warning);
}

/**
 * One structured line per settings error. A multi-line message (a template
 * excerpt with its caret) keeps its first line in the structured line; on a
 * terminal the excerpt follows on its own lines, where the caret lines up.
 */
function logSettingsError(log: Logger, err: unknown): void {
  const text = err instanceof SettingsError ? err.message : errorText(err);
  const [first, ...rest] = text.split("\n");
  if (log.terminal && rest.length > 0) {
    log.error("invalid settings", { error: first, help: HELP_HINT });
    log.terminalText(rest.join("\n"));
    return;
  }
  log.error("invalid settings", { error: text, help: HELP_HINT });
}

/**
 * Whether a storage failure is the store's fault (unreachable, unavailable,
 * failing): a cache failure, exit 0 unless `exit-code`. Rejected
 * credentials, refused access and wrong settings fail the step: the
 * pipeline must be fixed.
 */
function isCacheFailure(err: unknown): boolean {
  if (err instanceof SettingsError) return false;
  return !isStorageError(err) || !["AuthFailed", "AccessDenied", "InvalidSettings"].includes(err.code);
}

async function execute(
  settings: Settings,
  env: Record<string, string | undefined>,
  cwd: string,
  log: Logger,
): Promise<number> {
  if (log.enabled("debug")) log.debug("settings", describeSettings(settings));
  const choice = await chooseWhatToCache(settings, env, cwd, log);
  if (choice.skip) {
    log.info(`${settings.mode} skipped`, { reason: choice.skip });
    return 0;
  }
  if (settings.mode === "save" && choice.mounts.length === 0) {
    const how = settings.source.mount === "default" && Object.keys(env).some((k) => k.startsWith("PLUGIN_"))
      ? "set PLUGIN_MOUNT (or give mounts as arguments)"
      : "give mounts as arguments (ci-cache save node_modules) or with --mount";
    throw new SettingsError(`nothing to save: ${how}`);
  }
  checkKeyTemplate(settings);
  for (const mount of settings.mount) {
    for (const name of unsetMountVariables(mount, env)) {
      log.warn(`mount ${mount} uses $${name}, which is unset or empty: it expands to nothing`, {
        mount,
        variable: name,
      });
    }
  }

  let backend;
  try {
    backend = await openBackend(settings, log);
  } catch (err) {
    if (err instanceof SettingsError) throw err;
    const fields = {
      backend: settings.backend,
      error: errorText(err),
      ...(isStorageError(err) ? { kind: err.code } : {}),
    };
    if (isStorageError(err, "Unavailable")) {
      // The store cannot be reached: a cache failure, so the build goes on without its cache.
      log.error(`[IMPORTANT] ${settings.mode} cache failed: the storage backend is unavailable`, fields);
      if (settings.mode === "restore") await writeFailedOutputs(settings, env, log, "");
      return settings.exitCode ? 1 : 0;
    }
    // Rejected credentials and wrong backend settings fail the step (exit 1), as in the Go plugin.
    log.error("could not set up the storage backend", fields);
    return 1;
  }
  // SIGINT/SIGTERM abort the transfers, clean up, log one line and exit 130/143.
  const uninstall = installSignalHandlers(log);
  try {
    // Flushing a prefix needs no key: rendering one would log an unrelated key.
    const key = settings.mode === "flush" && settings.flushPrefix !== ""
      ? ""
      : choice.key ?? await renderKey(settings, log);
    if (settings.cacheKey !== "" && key !== "") {
      const empty = emptyFields(settings.cacheKey, templateData(settings));
      if (empty.length > 0) {
        log.warn(
          `cache key template uses ${empty.join(", ")}, which ${
            empty.length > 1 ? "are" : "is"
          } empty here: ` +
            "the key may be a prefix of other keys. Set the build metadata (DRONE_* variables or the " +
            "matching flags) or drop the field",
          { template: settings.cacheKey, key },
        );
      }
    }
    const ctx: OpContext = { settings, backend, log, key, env, cwd, exclude: choice.exclude };
    const target = key !== "" ? { key } : { prefix: settings.flushPrefix };
    log.info(`${settings.mode} started`, {
      ...target,
      backend: backend.kind,
      ...(settings.mode === "flush" ? {} : { mounts: choice.mounts.join(",") }),
    });
    switch (settings.mode) {
      case "save":
        return await runSave(ctx, await mountsToSave(ctx, choice));
      case "restore":
        return settings.lookupOnly
          ? await runLookup(ctx, choice.mounts)
          : await runRestore(ctx, choice.mounts);
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

async function runSave(ctx: OpContext, mounts: readonly string[]): Promise<number> {
  const outcomes = await saveMounts(ctx, mounts);
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

async function runRestore(ctx: OpContext, mounts: readonly string[]): Promise<number> {
  const { settings, log, key, env } = ctx;
  let result;
  try {
    result = await restoreMounts(ctx, mounts, await renderRestoreKeys(settings, log));
  } catch (err) {
    await writeFailedOutputs(settings, env, log, key);
    if (!isCacheFailure(err)) throw err;
    log.error(`[IMPORTANT] restore cache failed: ${errorText(err)}`, {
      key,
      ...(isStorageError(err) ? { kind: err.code } : {}),
    });
    return settings.exitCode ? 1 : 0;
  }
  const { outcomes } = result;
  const restored = outcomes.filter((o) => o.status === "restored").length;
  const total = outcomes.length;
  const state = result.match === "miss" ? "miss" : cacheState(outcomes);
  await writeStepOutputs(env, log, {
    hit: result.match === "exact" && state === "complete",
    state,
    matchedKey: restored > 0 ? result.matchedKey ?? "" : "",
    primaryKey: key,
  });
  log.info("restore done", {
    key,
    match: result.match,
    matched_key: result.matchedKey,
    state,
    restored,
    of: total,
    mounts: summarize(outcomes),
  });
  const reasons = (statuses: string[]) =>
    outcomes.filter((o) => statuses.includes(o.status)).map((o) => `${o.mount}: ${o.reason}`).join("; ") ||
    undefined;
  // A corrupt, truncated or unsafe cache is a failure, not a miss, also when other mounts restored.
  const failed = outcomes.filter((o) => o.status === "failed").length;
  if (failed > 0) {
    log.error(`[IMPORTANT] restore cache failed for ${failed} of ${total} mounts: ${reasons(["failed"])}`, {
      key,
    });
    return settings.exitCode ? 1 : 0;
  }
  if (state === "miss") {
    // A miss is expected on a first build: a warning, and only a failure when asked for.
    log.warn(`[IMPORTANT] restore cache, cache miss for key ${key}`, { reasons: reasons(["miss"]) });
    return settings.exitCode || settings.failRestoreIfKeyNotPresent ? 1 : 0;
  }
  if (state === "partial") {
    log.error(`[IMPORTANT] restore cache, partially restored (${restored}/${total} mounts)`, {
      failed: reasons(["failed", "miss"]),
    });
    return settings.exitCode ? 1 : 0;
  }
  return 0;
}

/** Step outputs of a restore that could not run at all. */
async function writeFailedOutputs(
  settings: Settings,
  env: Record<string, string | undefined>,
  log: Logger,
  key: string,
): Promise<void> {
  if (settings.mode !== "restore") return;
  await writeStepOutputs(env, log, { hit: false, state: "failed", matchedKey: "", primaryKey: key });
}

/** Lookup only: report whether a cache exists; download nothing. A miss is treated as a restore miss. */
async function runLookup(ctx: OpContext, mounts: readonly string[]): Promise<number> {
  const { settings } = ctx;
  const result = await lookupCache(ctx, mounts, await renderRestoreKeys(settings, ctx.log));
  ctx.log.info("lookup done (lookup-only: nothing downloaded)", {
    key: ctx.key,
    match: result.match,
    matched_key: result.matchedKey,
    cache_hit: result.hit,
    found: result.found.map((f) => `${f.mount}: ${f.object ?? "missing"}`).join("; ") || undefined,
  });
  if (result.match !== "miss") return 0;
  ctx.log.warn(`lookup: cache miss for key ${ctx.key}`);
  return settings.exitCode || settings.failRestoreIfKeyNotPresent ? 1 : 0;
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
      ? ` ${describeSizes(o.rawBytes, o.storedBytes)}`
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
