/**
 * What every build-tool module of auto-detect shares: the context it runs
 * in, what it reports, the Go plugin's manifest search (A§6.2: `filepath.Glob`
 * in the working directory, then one directory level down, shortest path
 * wins, ties to the last) and MD5 of files.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import picomatch from "../deps/picomatch.ts";
import type { Logger } from "../log.ts";

/** Where detection runs. */
export interface ToolContext {
  /** The working directory (the Go plugin's process cwd). */
  cwd: string;
  env: Record<string, string | undefined>;
  log: Logger;
  /** Whether tool configuration files may be edited (save and restore; not flush). */
  edit: boolean;
}

/** One detected tool. */
export interface Detection {
  tool: string;
  /** MD5 hex of the tool's manifest(s): its part of the key. */
  hash: string;
  /** Absolute (or, for Go, relative) directories to cache. */
  dirs: string[];
  /** The manifest files hashed (relative to the working directory). */
  files: string[];
}

/** A build tool auto-detect knows. */
export interface Tool {
  name: string;
  /** The tool's detection, or undefined when its manifest is not found. */
  detect(ctx: ToolContext): Promise<Detection | undefined>;
}

/**
 * Go's `filepath.Glob(pattern)` for a single-segment pattern (`pom.xml`,
 * `*.csproj`) in `cwd`, then, when that finds nothing, `filepath.Glob("**\/" +
 * pattern)`, which in Go is one directory level (`*` never crosses `/`, dot
 * names included). Returns paths relative to `cwd` in Go's order.
 *
 * @example
 * ```ts
 * goGlobTwoStep("/work", "pom.xml"); // ["pom.xml"] or ["api/pom.xml", "web/pom.xml"]
 * ```
 */
export function goGlobTwoStep(cwd: string, pattern: string): string[] {
  const match = picomatch(pattern, { dot: true });
  const names = (dir: string): string[] => {
    try {
      return Array.from(Deno.readDirSync(dir), (e) => e.name).sort();
    } catch {
      return [];
    }
  };
  const top = names(cwd).filter((n) => match(n));
  if (top.length > 0) return top;
  const out: string[] = [];
  for (const d of names(cwd)) {
    let isDir = false;
    try {
      isDir = Deno.statSync(posix.join(cwd, d)).isDirectory; // Go's glob stats (follows links)
    } catch { /* not a directory */ }
    if (!isDir) continue;
    for (const n of names(posix.join(cwd, d))) if (match(n)) out.push(`${d}/${n}`);
  }
  return out;
}

/** The shortest path; the last one of equal length wins (the Go plugin's `<=` scan). */
export function shortest(paths: readonly string[]): string | undefined {
  let best: string | undefined;
  for (const p of paths) if (best === undefined || p.length <= best.length) best = p;
  return best;
}

/** MD5 hex over the contents of the files, concatenated in the given order. */
export async function md5Files(cwd: string, files: readonly string[]): Promise<string> {
  const h = createHash("md5");
  for (const f of files) h.update(await Deno.readFile(posix.resolve(cwd, f)));
  return h.digest("hex");
}

/**
 * The common case: the first of `patterns` (in order) that matches decides;
 * its shortest match is the manifest, its directory `D`.
 */
export async function findManifest(
  ctx: ToolContext,
  patterns: readonly string[],
): Promise<{ file: string; dir: string; hash: string } | undefined> {
  for (const pattern of patterns) {
    const file = shortest(goGlobTwoStep(ctx.cwd, pattern));
    if (file === undefined) continue;
    return { file, dir: posix.dirname(posix.resolve(ctx.cwd, file)), hash: await md5Files(ctx.cwd, [file]) };
  }
  return undefined;
}
