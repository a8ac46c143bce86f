/**
 * Auto-detect ("cache intelligence", `PLUGIN_AUTO_CACHE=true`), compatible
 * with the Go plugin (A§6): the same tools in the same order, the same
 * cached directories and the same key, so a Harness pipeline that switches
 * keeps hitting its caches.
 *
 * - Tools, in order: maven, gradle, bazel, node, yarn, golang, dotnet (the
 *   Go plugin's), then pnpm, pip, cargo (ours, appended to the key after the
 *   Go plugin's part, so a project without them keeps its Go plugin key).
 * - Key: `<account-id>/<cache-key>` when a key template is set, else
 *   `<account-id>/<MD5 hex of each detected tool's manifest, concatenated>`,
 *   else `<account-id>/default`. A template that fails to execute falls back
 *   to the MD5 hex of `account-id + branch`, as the Go plugin.
 * - User mounts switch detection off (no file is touched, nothing hashed).
 * - Nothing detected, no key, no mounts: the cache step does nothing.
 * - Mounts without a key: the key `default`, or, with
 *   `PLUGIN_AUTO_CACHE_EARLY_EXIT=true`, nothing (the Go plugin only logged).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { type Settings, SettingsError } from "../settings.ts";
import { md5Hex, renderTemplate } from "../key/key.ts";
import { TemplateExecError } from "../key/template.ts";
import type { Detection, Tool, ToolContext } from "./tool.ts";
import { maven } from "./maven.ts";
import { gradle } from "./gradle.ts";
import { bazel } from "./bazel.ts";
import { node } from "./node.ts";
import { yarn } from "./yarn.ts";
import { golang } from "./golang.ts";
import { dotnet } from "./dotnet.ts";
import { pnpm } from "./pnpm.ts";
import { pip } from "./pip.ts";
import { cargo } from "./cargo.ts";

/** The Go plugin's tools, in its detection order (A§6.1). */
export const GO_PLUGIN_TOOLS: readonly Tool[] = [maven, gradle, bazel, node, yarn, golang, dotnet];
/** Tools beyond the Go plugin, detected after its own. */
export const EXTRA_TOOLS: readonly Tool[] = [pnpm, pip, cargo];

/**
 * Runs every detector in order. Returns the detections, the directories to
 * cache (de-duplicated, in detection order) and the key part (the hashes
 * concatenated).
 *
 * @example
 * ```ts
 * const { dirs, hash } = await detectTools({ cwd: "/w", env: {}, log, edit: false });
 * ```
 */
export async function detectTools(
  ctx: ToolContext,
  tools: readonly Tool[] = [...GO_PLUGIN_TOOLS, ...EXTRA_TOOLS],
): Promise<{ detections: Detection[]; dirs: string[]; hash: string }> {
  const detections: Detection[] = [];
  for (const tool of tools) {
    const d = await tool.detect(ctx);
    if (!d) continue;
    ctx.log.info("auto-detect: build tool found", {
      tool: d.tool,
      files: d.files.join(","),
      dirs: d.dirs.join(","),
    });
    detections.push(d);
  }
  const dirs = [...new Set(detections.flatMap((d) => d.dirs))];
  return { detections, dirs, hash: detections.map((d) => d.hash).join("") };
}

/** What auto-detect decided. */
export type AutoDetectResult =
  | { kind: "skip"; reason: string }
  | {
    kind: "run";
    /** The rendered key. */
    key: string;
    mounts: string[];
    /** True when the mounts were detected: missing ones are skipped on save, not failures. */
    detected: boolean;
    detections: Detection[];
  };

/**
 * Auto-detect for one run: detection (unless the user gave mounts), tool
 * configuration edits (save and restore), and the key.
 *
 * @example
 * ```ts
 * const r = await autoDetect(settings, env, "/harness", log);
 * if (r.kind === "run") console.log(r.key, r.mounts); // "acct/5d41…" ["/harness/node_modules"]
 * ```
 */
export async function autoDetect(
  settings: Settings,
  env: Record<string, string | undefined>,
  cwd: string,
  log: Logger,
  userMounts: readonly string[],
): Promise<AutoDetectResult> {
  const pathGiven = userMounts.length > 0;
  let detections: Detection[] = [];
  let mounts = [...userMounts];
  let hash = "";
  if (!pathGiven) {
    const found = await detectTools({ cwd, env, log, edit: settings.mode !== "flush" });
    detections = found.detections;
    mounts = found.dirs;
    hash = found.hash;
  }
  if (detections.length === 0 && settings.cacheKey === "" && !pathGiven) {
    log.info("no build tool detected. Please provide custom key and path to use cache");
    return { kind: "skip", reason: "no build tool detected" };
  }
  if (pathGiven && settings.cacheKey === "") {
    if (settings.autoDetectEarlyExit) {
      log.info("A key must be provided if any custom paths are used. Skipping cache");
      return { kind: "skip", reason: "mounts given without a key (PLUGIN_AUTO_CACHE_EARLY_EXIT)" };
    }
    log.info("auto-detect: mounts given without a key: using the key `default`, as the Go plugin");
  }
  const template = `${settings.accountId}/${settings.cacheKey || hash || "default"}`;
  let key: string;
  try {
    key = await renderTemplate(template, settings, log);
  } catch (err) {
    if (err instanceof SettingsError || !(err instanceof TemplateExecError)) throw err;
    key = md5Hex(settings.accountId + settings.commitBranch);
    log.warn("auto-detect: cache key template failed: using the fallback key (MD5 of account id + branch)", {
      template,
      reason: err.message,
      fallback_key: key,
    });
  }
  return { kind: "run", key, mounts, detected: !pathGiven, detections };
}
