/**
 * Choosing what to cache, one step before any transfer: split `!` excludes
 * off the mounts, run auto-detect when `PLUGIN_AUTO_CACHE` is on (it may
 * supply the mounts and the key, or decide to do nothing), and, for save,
 * expand glob mounts against the file system.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { Settings } from "../settings.ts";
import { excludeFilter, expandMounts, loadGlobEngine, splitMounts } from "./mounts.ts";
import type { OpContext } from "./save.ts";

/** The mounts, excludes and (with auto-detect) key of one run. */
export interface Choice {
  /** Set when there is nothing to do (auto-detect found nothing, or early exit): why. */
  skip?: string;
  /** Mounts as configured or detected (globs not expanded yet). */
  mounts: string[];
  /** The exclude predicate for archives. */
  exclude?: (path: string) => boolean;
  /** The key auto-detect rendered; undefined: render the key as usual. */
  key?: string;
  /** The mounts were detected: a missing one is skipped on save, not a failure. */
  detected: boolean;
}

/**
 * Decides the mounts, excludes and, with auto-detect, the key.
 *
 * @example
 * ```ts
 * const choice = await chooseWhatToCache(settings, env, cwd, log);
 * if (choice.skip) return 0;
 * ```
 */
export async function chooseWhatToCache(
  settings: Settings,
  env: Record<string, string | undefined>,
  cwd: string,
  log: Logger,
): Promise<Choice> {
  const { mounts, excludes } = splitMounts(settings.mount, settings.exclude);
  await loadGlobEngine([...mounts, ...excludes]);
  const exclude = excludeFilter(excludes, cwd);
  if (excludes.length > 0) log.debug("excludes", { patterns: excludes.join(",") });
  if (settings.lookupOnly && settings.mode !== "restore") {
    log.warn("lookup-only applies to restore only: ignored", { mode: settings.mode });
  }
  if (!settings.autoDetect) return { mounts, exclude, detected: false };
  // Loaded only when asked for: the detectors (node:crypto, picomatch) cost start-up CPU otherwise.
  const { autoDetect } = await import("../autodetect/detect.ts");
  const auto = await autoDetect(settings, env, cwd, log, mounts);
  if (auto.kind === "skip") return { skip: auto.reason, mounts: [], detected: false };
  await loadGlobEngine(auto.mounts);
  return { mounts: auto.mounts, exclude, key: auto.key, detected: auto.detected };
}

/**
 * The concrete mounts to save: globs expanded (a glob matching nothing is a
 * warning), and, for detected mounts, missing directories left out with a
 * warning (the Go plugin's graceful mode).
 *
 * @example
 * ```ts
 * const mounts = await mountsToSave(ctx, choice); // ["packages/a/node_modules", "packages/b/node_modules"]
 * ```
 */
export async function mountsToSave(ctx: OpContext, choice: Choice): Promise<string[]> {
  const expanded = expandMounts(choice.mounts, {
    cwd: ctx.cwd,
    env: ctx.env,
    exclude: choice.exclude,
    log: ctx.log,
  });
  if (!choice.detected) return expanded;
  const present: string[] = [];
  for (const m of expanded) {
    try {
      await Deno.lstat(m.startsWith("/") ? m : `${ctx.cwd}/${m}`);
      present.push(m);
    } catch {
      ctx.log.warn("auto-detect: detected directory does not exist: skipped", { mount: m });
    }
  }
  return present;
}
