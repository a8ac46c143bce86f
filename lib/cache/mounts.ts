/**
 * Choosing what to cache: glob mounts and excludes.
 *
 * A mount may be a glob (`**`, `*`, `?`, `{a,b}`, `[…]`, e.g.
 * `packages/*\/node_modules`). At save time it expands to every matching
 * directory or file, each saved as its own object named as any mount
 * (`<key>/<match>`, as the upstream Go plugin names doublestar matches).
 * Matching uses picomatch, segment by segment behind a linear pre-check (no
 * catastrophic backtracking); the walk never follows symlinks, does not
 * descend into a match (a nested match is already inside its parent's
 * archive) nor into an excluded path, and stops at the pattern's depth when
 * it has no `**`.
 *
 * Excludes (`!pattern` entries in the mount list, or `PLUGIN_EXCLUDE`) leave
 * matching paths out of every archive. A pattern without `/` matches a name
 * at any depth (`.cache`); one with `/` matches the path relative to the
 * working directory (or the absolute path, for paths outside it or absolute
 * patterns).
 *
 * At restore, a glob mount is matched against the object names listed under
 * the key, so it also restores into a fresh checkout where the directories
 * do not exist yet (the Go plugin's open bug).
 *
 * @module
 */
import { posix } from "node:path";
import type picomatchType from "../deps/picomatch.ts";
import type { Logger } from "../log.ts";
import { expandMount } from "./layout.ts";

let engine: typeof picomatchType | undefined;

/**
 * Loads picomatch (npm, with Node's module machinery: a large part of
 * start-up CPU) when any of `patterns` may be a glob; the matching below
 * needs it then. Runs whose mounts and excludes are plain paths never load
 * it. Call (and await) before {@link isGlobMount}, {@link excludeFilter},
 * {@link expandMounts}, {@link globMatches} or {@link globObjectMatcher} see
 * such patterns.
 *
 * @example
 * ```ts
 * await loadGlobEngine(["packages/*\/node_modules"]);
 * ```
 */
export async function loadGlobEngine(patterns: readonly string[]): Promise<void> {
  if (engine === undefined && patterns.some(mayBeGlob)) {
    engine = (await import("../deps/picomatch.ts")).default;
  }
}

/** Glob syntax picomatch acts on; a string without any of it is a plain path. */
const GLOB_SYNTAX = /[*?[\]{}()!+@\\]/;

/** Whether a pattern may be a glob (no picomatch needed to say no). */
function mayBeGlob(pattern: string): boolean {
  return GLOB_SYNTAX.test(pattern);
}

/** picomatch, loaded by {@link loadGlobEngine}. */
function picomatch(): typeof picomatchType {
  if (engine === undefined) {
    throw new Error("mounts: glob patterns used before loadGlobEngine() loaded picomatch");
  }
  return engine;
}

/** Options every pattern is compiled with: `*` also matches dot files, as Go's Glob and tar do. */
const PM_OPTIONS = { dot: true } as const;

/** Mounts and exclude patterns, split from the configured list. */
export interface MountSelection {
  /** Mounts as configured (literal paths and globs), `!` entries removed. */
  mounts: string[];
  /** Exclude patterns (without the `!`), from `!` mounts and `PLUGIN_EXCLUDE`. */
  excludes: string[];
}

/**
 * Splits `!pattern` entries off the mount list and adds the `exclude` setting.
 *
 * @example
 * ```ts
 * splitMounts(["node_modules", "!**\/.cache"], ["*.log"]);
 * // { mounts: ["node_modules"], excludes: ["**\/.cache", "*.log"] }
 * ```
 */
export function splitMounts(mounts: readonly string[], exclude: readonly string[] = []): MountSelection {
  const out: MountSelection = { mounts: [], excludes: [] };
  for (const m of mounts) {
    if (m.startsWith("!")) {
      if (m.length > 1) out.excludes.push(m.slice(1));
    } else out.mounts.push(m);
  }
  for (const e of exclude) out.excludes.push(e.startsWith("!") ? e.slice(1) : e);
  return out;
}

/**
 * Whether a mount is a glob pattern rather than a literal path.
 *
 * @example
 * ```ts
 * isGlobMount("packages/*\/node_modules"); // true
 * isGlobMount("node_modules"); // false
 * ```
 */
export function isGlobMount(mount: string): boolean {
  return mayBeGlob(mount) && picomatch().scan(mount).isGlob;
}

/** `a/**\/**\/b` → `a/**\/b`: repeated globstars match the same paths and cost backtracking. */
function normalizePattern(pattern: string): string {
  let p = pattern.replaceAll("\\", "/");
  while (p.startsWith("./")) p = p.slice(2);
  p = p.replace(/(^|\/)\*\*(?:\/\*\*)+(?=\/|$)/g, "$1**");
  return p.replace(/\/{2,}/g, "/");
}

/**
 * A predicate over absolute paths that is true for excluded ones, or
 * undefined when there are no excludes. Relative patterns match the path
 * relative to `cwd` (the absolute path when it lies outside `cwd`); a
 * pattern without `/` matches the last path segment.
 *
 * @example
 * ```ts
 * const skip = excludeFilter(["**\/node_modules/.cache", "*.log"], "/work")!;
 * skip("/work/a/node_modules/.cache"); // true
 * skip("/work/debug.log"); // true
 * ```
 */
export function excludeFilter(
  patterns: readonly string[],
  cwd: string,
): ((absPath: string) => boolean) | undefined {
  const cleaned = patterns.map((p) => normalizePattern(p)).filter((p) => p !== "");
  if (cleaned.length === 0) return undefined;
  const base = cleaned.filter((p) => !p.includes("/"));
  const abs = cleaned.filter((p) => p.startsWith("/"));
  const rel = cleaned.filter((p) => p.includes("/") && !p.startsWith("/"));
  const matchBase = base.length ? picomatch()(base, PM_OPTIONS) : undefined;
  const matchAbs = abs.length ? picomatch()(abs, PM_OPTIONS) : undefined;
  const matchRel = rel.length ? picomatch()(rel, PM_OPTIONS) : undefined;
  const root = cwd.endsWith("/") ? cwd : `${cwd}/`;
  return (path: string) => {
    if (matchBase?.(posix.basename(path))) return true;
    if (matchAbs?.(path)) return true;
    if (!matchRel) return false;
    return matchRel(path.startsWith(root) ? path.slice(root.length) : path);
  };
}

/** What {@link expandMounts} needs. */
export interface ExpandOptions {
  cwd: string;
  env: Record<string, string | undefined>;
  /** Excluded paths are neither matched nor walked into. */
  exclude?: (absPath: string) => boolean;
  log?: Logger;
}

/**
 * Expands glob mounts against the file system (save time); literal mounts
 * pass through unchanged. A glob that matches nothing is a warning, not an
 * error. Matches keep the pattern's form: `./` patterns give `./` matches,
 * absolute patterns absolute ones. Duplicates are dropped, order kept.
 *
 * @example
 * ```ts
 * expandMounts(["packages/*\/node_modules", "vendor"], { cwd: "/work", env: {} });
 * // ["packages/a/node_modules", "packages/b/node_modules", "vendor"]
 * ```
 */
export function expandMounts(mounts: readonly string[], options: ExpandOptions): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (m: string) => {
    if (!seen.has(m)) out.push(m), seen.add(m);
  };
  for (const mount of mounts) {
    if (!isGlobMount(mount)) {
      add(mount);
      continue;
    }
    const matches = globMatches(expandMount(mount, options.env), options);
    if (matches.length === 0) {
      options.log?.warn("glob mount matched nothing: nothing to save for it", { mount, cwd: options.cwd });
    } else {
      options.log?.info("glob mount expanded", { mount, matches: matches.length });
    }
    matches.forEach(add);
  }
  return out;
}

/** A compiled glob: the directory to walk from, the matcher, and the depth limit. */
interface CompiledGlob {
  /** Leading `./` or `/` the matches get back. */
  lead: "" | "./" | "/";
  /** The pattern without its lead. */
  pattern: string;
  /** Literal directory part (no glob characters), "" for the start directory. */
  base: string;
  match: (path: string) => boolean;
  /** Segments below `base` a match can have (Infinity with `**`). */
  depth: number;
}

/** Characters with a meaning in a glob segment besides `*` and `?`. */
const SPECIAL = /[[\]{}()!+@\\]/;

/**
 * A quick check of one path segment against one pattern segment, run before
 * picomatch's regular expression: a literal segment is compared directly; a
 * segment of literal text, `*` and `?` only is decided exactly in linear time
 * (its literal pieces must occur in order, the first at the start and the
 * last at the end unless a wildcard stands there); other segments must at
 * least start and end with their literal head and tail. Picomatch then only
 * runs where a match is likely, so `a*a*a*a*a*b` against long names of `a`s
 * costs a scan instead of exponential backtracking.
 */
function segmentFilter(segment: string): (name: string) => boolean {
  if (!/[*?[\]{}()!+@\\]/.test(segment)) return (name) => name === segment;
  const head = segment.split(/[*?[\]{}()!+@\\]/)[0];
  const tail = segment.split(/[*?[\]{}()!+@\\]/).at(-1)!;
  if (SPECIAL.test(segment)) return (name) => name.startsWith(head) && name.endsWith(tail);
  const pieces = segment.split(/[*?]+/);
  const minLength = segment.replace(/\*/g, "").length;
  const middle = pieces.slice(1, -1).filter((x) => x !== "");
  return (name) => {
    if (name.length < minLength || !name.startsWith(head) || !name.endsWith(tail)) return false;
    let at = head.length;
    const end = name.length - tail.length;
    for (const piece of middle) {
      const i = name.indexOf(piece, at);
      if (i < 0 || i + piece.length > end) return false;
      at = i + piece.length;
    }
    return true;
  };
}

/**
 * The matcher of a pattern: segment by segment (each segment a picomatch
 * matcher behind {@link segmentFilter}; `**` matches any number of
 * segments, found by a small table over pattern × path segments, so a path
 * costs at most their product in segment checks). Patterns whose braces or
 * classes contain `/` go to picomatch whole.
 */
function guardedMatcher(pattern: string): (path: string) => boolean {
  if (/\{[^}]*\/|\[[^\]]*\//.test(pattern)) return picomatch()(pattern, PM_OPTIONS);
  const segs = pattern.split("/").map((seg) => {
    if (seg === "**") return undefined;
    const quick = segmentFilter(seg);
    const full = picomatch()(seg, PM_OPTIONS);
    return (name: string) => quick(name) && full(name);
  });
  return (path) => {
    const parts = path.split("/");
    // reach[j]: pattern segments so far can consume exactly the first j path segments.
    let reach = new Array<boolean>(parts.length + 1).fill(false);
    reach[0] = true;
    for (const seg of segs) {
      const next = new Array<boolean>(parts.length + 1).fill(false);
      if (seg === undefined) {
        let any = false;
        for (let j = 0; j <= parts.length; j++) next[j] = any ||= reach[j];
      } else {
        for (let j = 0; j < parts.length; j++) if (reach[j] && seg(parts[j])) next[j + 1] = true;
      }
      reach = next;
      if (!reach.includes(true)) return false;
    }
    return reach[parts.length];
  };
}

function compileGlob(expanded: string): CompiledGlob {
  const slashed = expanded.replaceAll("\\", "/");
  const lead = slashed.startsWith("./") ? "./" : slashed.startsWith("/") ? "/" : "";
  const pattern = normalizePattern(slashed).replace(/^\/+/, "");
  const scan = picomatch().scan(pattern);
  const base = scan.isGlob ? scan.base : pattern;
  const rest = scan.isGlob ? scan.glob : "";
  const depth = rest.includes("**") ? Infinity : rest.split("/").filter((s) => s !== "").length;
  return { lead, pattern, base, match: guardedMatcher(pattern), depth };
}

/**
 * Every path under the working directory matching one (expanded) glob mount,
 * in walk order (lexical), without following symlinks, without descending
 * into matches or excluded paths.
 */
export function globMatches(expanded: string, options: ExpandOptions): string[] {
  const g = compileGlob(expanded);
  const top = g.lead === "/" ? "/" : options.cwd;
  const toAbs = (rel: string) => rel === "" ? top : top === "/" ? `/${rel}` : `${top}/${rel}`;
  const matches: string[] = [];
  const stack: { rel: string; depth: number }[] = [];
  try {
    if (Deno.lstatSync(toAbs(g.base)).isDirectory) stack.push({ rel: g.base, depth: 0 });
  } catch {
    return matches; // the literal part does not exist: nothing matches
  }
  while (stack.length > 0) {
    const { rel, depth } = stack.pop()!;
    let entries: Deno.DirEntry[];
    try {
      entries = Array.from(Deno.readDirSync(toAbs(rel)));
    } catch {
      continue; // unreadable or vanished: nothing below it matches
    }
    entries.sort((a, b) => (a.name < b.name ? 1 : a.name > b.name ? -1 : 0)); // reversed: popped in order
    const dirs: { rel: string; depth: number }[] = [];
    for (const e of entries) {
      const path = rel === "" ? e.name : `${rel}/${e.name}`;
      if (options.exclude?.(toAbs(path))) continue;
      if (g.match(path)) {
        matches.push(path);
        continue;
      }
      if (e.isDirectory && !e.isSymlink && depth + 1 < g.depth) dirs.push({ rel: path, depth: depth + 1 });
    }
    stack.push(...dirs);
  }
  matches.sort();
  return matches.map((m) => g.lead + m);
}

/**
 * For restore: a predicate over the mount part of object names (what
 * follows `<key>/`) that is true for objects a glob mount saved, and the
 * mount each such object restores to (the pattern's `./` or `/` put back).
 *
 * @example
 * ```ts
 * const g = globObjectMatcher("./packages/**\/node_modules", {});
 * g.match("packages/a/node_modules"); // true
 * g.mountOf("packages/a/node_modules"); // "./packages/a/node_modules"
 * ```
 */
export function globObjectMatcher(
  mount: string,
  env: Record<string, string | undefined>,
): { match: (objectPath: string) => boolean; mountOf: (objectPath: string) => string } {
  const g = compileGlob(expandMount(mount, env));
  return { match: g.match, mountOf: (p) => g.lead + p };
}
