/**
 * The functions cache key templates can call besides Go's built-ins.
 *
 * From the Go plugin (same names, same results):
 * - `checksum "file"`: MD5 hex of one file's content; the path is relative
 *   to the process working directory. A missing or unreadable file renders
 *   `""` as in the Go plugin (so keys stay the same), with a loud warning
 *   naming the file (the Go plugin only logged it quietly).
 * - `epoch`: Unix time in seconds, as a decimal string.
 * - `arch`: Go's GOARCH name of this machine (`amd64`, `arm64`).
 * - `os`: Go's GOOS name (`linux`, `darwin`, `windows`).
 *
 * From upstream drone-cache, extended (ci-cache addition in this fork):
 * - `hashFiles "glob" …`: SHA-256 hex over the SHA-256 digests of every
 *   matched file, in sorted path order; `**` matches any number of
 *   directories; `node_modules` and `.git` directories are skipped unless the
 *   pattern names them. No match: a warning and `""`.
 *
 * ci-cache additions (argument order as Sprig's, so `|` pipes read the same
 * as in Helm): `lower s`, `upper s`, `trim s`, `trimPrefix prefix s`,
 * `trimSuffix suffix s`, `replace old new s`, `trunc n s`.
 *
 * @module
 */
import type { Hash } from "node:crypto";

/** `node:crypto`'s createHash, loaded when a template hashes files (it costs start-up CPU otherwise). */
async function createHash(algorithm: "md5" | "sha256"): Promise<Hash> {
  return (await import("node:crypto")).createHash(algorithm);
}
import { isAbsolute, join, resolve } from "node:path";
import { Logger } from "../log.ts";
import type { FuncMap, TemplateFunc, Value } from "./template.ts";

/** Options for {@link keyFunctions} and {@link hashFiles}. */
export interface HelperOptions {
  /** Where `hashFiles` warnings go. Default: a logger on stderr. */
  log?: Logger;
  /** Directory relative paths resolve against. Default: the process working directory. */
  cwd?: string;
}

/** Go's GOARCH name for a Deno architecture (`x86_64` → `amd64`, `aarch64` → `arm64`). */
export function goArch(arch: string = Deno.build.arch): string {
  return ({ x86_64: "amd64", aarch64: "arm64" } as Record<string, string>)[arch] ?? arch;
}

/** Go's GOOS name for a Deno OS (the names agree: `linux`, `darwin`, `windows`, …). */
export function goOs(os: string = Deno.build.os): string {
  return os;
}

/** Current Unix time in whole seconds, as a decimal string (the Go plugin's `epoch`). */
export function epochSeconds(now: number = Date.now()): string {
  return String(Math.floor(now / 1000));
}

async function digestFile(path: string, hash: Hash): Promise<Hash> {
  const file = await Deno.open(path, { read: true });
  // The readable closes the file when it ends or errors.
  for await (const chunk of file.readable) hash.update(chunk);
  return hash;
}

/**
 * MD5 hex of one file's content, read in chunks (the Go plugin's
 * `checksum`). Relative paths resolve against `cwd`. Throws an error naming
 * the path and the directory when the file cannot be read.
 *
 * @example
 * ```ts
 * await checksumFile("go.sum"); // "9e107d9d372bb6826bd81d3542a419d6"
 * ```
 */
export async function checksumFile(path: string, cwd: string = Deno.cwd()): Promise<string> {
  const abs = resolve(cwd, path);
  try {
    return (await digestFile(abs, await createHash("md5"))).digest("hex");
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "no such file"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : err instanceof Error
      ? err.message
      : String(err);
    throw new Error(
      `cannot read ${JSON.stringify(path)} (${abs}): ${why}` +
        (isAbsolute(path) ? "" : `; relative paths resolve against the working directory ${cwd}`),
      { cause: err },
    );
  }
}

// ── glob matching ────────────────────────────────────────────────────────

type Segment = { kind: "globstar" } | { kind: "literal"; name: string } | { kind: "wild"; re: RegExp };

const IGNORED_DIRS = ["node_modules", ".git"];

/** Translates one path segment of a glob (`*`, `?`, `[…]`, `\x`) to a regular expression. */
function segmentRegExp(seg: string, pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i];
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "\\") re += escapeRe(seg[++i] ?? "\\");
    else if (c === "[") {
      const close = seg.indexOf("]", i + 2);
      if (close < 0) throw new Error(`bad pattern ${JSON.stringify(pattern)}: unclosed [`);
      let cls = seg.slice(i + 1, close);
      const negate = cls[0] === "!" || cls[0] === "^";
      if (negate) cls = cls.slice(1);
      re += `[${negate ? "^" : ""}${cls.replace(/[\\\]^]/g, "\\$&")}]`;
      i = close;
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, "u");
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

function compile(pattern: string): { base: string; segments: Segment[]; named: Set<string> } {
  const absolute = pattern.startsWith("/");
  const parts = pattern.split("/").filter((p) => p !== "" && p !== ".");
  const segments: Segment[] = parts.map((p) =>
    p === "**"
      ? { kind: "globstar" }
      : /[*?[\\]/.test(p)
      ? { kind: "wild", re: segmentRegExp(p, pattern) }
      : { kind: "literal", name: p }
  );
  const named = new Set(parts.filter((p) => IGNORED_DIRS.includes(p)));
  return { base: absolute ? "/" : "", segments, named };
}

async function kindOf(path: string, entry?: Deno.DirEntry): Promise<"file" | "dir" | "link-dir" | null> {
  if (entry && !entry.isSymlink) return entry.isFile ? "file" : entry.isDirectory ? "dir" : null;
  try {
    const st = await Deno.stat(path);
    const linked = entry?.isSymlink ?? (await Deno.lstat(path)).isSymlink;
    return st.isFile ? "file" : st.isDirectory ? (linked ? "link-dir" : "dir") : null;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return null;
    throw err;
  }
}

async function* entries(dir: string): AsyncGenerator<Deno.DirEntry> {
  try {
    yield* Deno.readDir(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return;
    throw err;
  }
}

/**
 * Adds the files under `dir` that match `segments[i..]` to `out`. Symlinked
 * directories are followed by literal and wildcard segments but not by `**`
 * (no cycles); ignored directories are entered only by a literal segment or
 * when the pattern names them.
 */
async function expand(
  dir: string,
  segments: Segment[],
  i: number,
  named: Set<string>,
  out: Set<string>,
): Promise<void> {
  const seg = segments[i];
  const last = i === segments.length - 1;
  const skip = (name: string) => IGNORED_DIRS.includes(name) && !named.has(name);
  if (seg.kind === "literal") {
    const path = join(dir, seg.name);
    const kind = await kindOf(path);
    if (last && kind === "file") out.add(path);
    else if (!last && (kind === "dir" || kind === "link-dir")) {
      await expand(path, segments, i + 1, named, out);
    }
    return;
  }
  if (seg.kind === "globstar") {
    if (!last) await expand(dir, segments, i + 1, named, out);
    for await (const e of entries(dir)) {
      const path = join(dir, e.name);
      const kind = await kindOf(path, e);
      if (kind === "file" && last) out.add(path);
      else if (kind === "dir" && !skip(e.name)) await expand(path, segments, i, named, out);
    }
    return;
  }
  for await (const e of entries(dir)) {
    if (!seg.re.test(e.name)) continue;
    const path = join(dir, e.name);
    const kind = await kindOf(path, e);
    if (last && kind === "file") out.add(path);
    else if (!last && (kind === "dir" || kind === "link-dir") && !skip(e.name)) {
      await expand(path, segments, i + 1, named, out);
    }
  }
}

/**
 * The files matching any of the glob `patterns`, as absolute paths in sorted
 * order. `*`, `?` and `[…]` match within one path segment (dotfiles
 * included, as Go's `filepath.Glob`); `**` matches zero or more
 * directories; a pattern ending in `**` matches every file below.
 *
 * @example
 * ```ts
 * await globFiles(["**\/package-lock.json"], "/repo"); // ["/repo/a/package-lock.json", …]
 * ```
 */
export async function globFiles(patterns: readonly string[], cwd: string = Deno.cwd()): Promise<string[]> {
  const out = new Set<string>();
  for (const pattern of patterns) {
    // On Windows `\` separates paths; elsewhere it escapes glob characters.
    const { base, segments, named } = compile(
      Deno.build.os === "windows" ? pattern.replaceAll("\\", "/") : pattern,
    );
    if (segments.length === 0) continue;
    await expand(base === "/" ? "/" : resolve(cwd), segments, 0, named, out);
  }
  return [...out].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * The upstream `hashFiles`: SHA-256 over the concatenated raw SHA-256
 * digests of every matched file (sorted path order), as hex. No match: a
 * warning on `log` and `""`, so the key visibly loses that component.
 *
 * @example
 * ```ts
 * await hashFiles(["**\/go.sum", "go.mod"], { cwd: "/repo", log });
 * ```
 */
export async function hashFiles(patterns: readonly string[], options: HelperOptions = {}): Promise<string> {
  const cwd = options.cwd ?? Deno.cwd();
  const files = await globFiles(patterns, cwd);
  if (files.length === 0) {
    (options.log ?? new Logger()).warn(
      "cache key: hashFiles matched no file; it yields an empty string. Check the patterns and the working directory",
      { patterns: patterns.join(" "), cwd },
    );
    return "";
  }
  const total = await createHash("sha256");
  for (const file of files) {
    try {
      total.update((await digestFile(file, await createHash("sha256"))).digest());
    } catch (err) {
      throw new Error(`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
  }
  (options.log ?? new Logger()).debug("cache key: hashFiles", {
    patterns: patterns.join(" "),
    files: files.length,
  });
  return total.digest("hex");
}

// ── the function map ─────────────────────────────────────────────────────

const str = (v: Value) => v as string;

/** Go's strings.TrimSpace (Unicode white space). */
function trimSpace(s: string): string {
  return s.replace(/^[\s\u0085]+|[\s\u0085]+$/gu, "");
}

/**
 * The template functions of cache keys: the Go plugin's (`checksum`,
 * `epoch`, `arch`, `os`), `hashFiles`, and the string helpers added by
 * ci-cache. Pass them to `parseTemplate` as `funcs`.
 *
 * @example
 * ```ts
 * const t = parseTemplate('{{ checksum "go.sum" }}', { name: "cacheKey", funcs: keyFunctions({ log }) });
 * ```
 */
export function keyFunctions(options: HelperOptions = {}): FuncMap {
  const f = (
    params: TemplateFunc["params"],
    call: TemplateFunc["call"],
    variadic?: "string",
  ): TemplateFunc => ({
    params,
    call,
    variadic,
  });
  return {
    checksum: f(["string"], async (p) => {
      try {
        return await checksumFile(str(p), options.cwd);
      } catch (err) {
        (options.log ?? new Logger()).warn(
          'checksum: the file cannot be read, so it renders "" in the key (as in the Go plugin) and the key ' +
            "no longer changes with the file's content: fix the path in the key template",
          { file: str(p), reason: (err as Error).message },
        );
        return "";
      }
    }),
    hashFiles: f([], (...patterns) => hashFiles(patterns.map(str), options), "string"),
    epoch: f([], () => epochSeconds()),
    arch: f([], () => goArch()),
    os: f([], () => goOs()),
    lower: f(["string"], (s) => str(s).toLowerCase()),
    upper: f(["string"], (s) => str(s).toUpperCase()),
    trim: f(["string"], (s) => trimSpace(str(s))),
    trimPrefix: f(
      ["string", "string"],
      (p, s) => str(s).startsWith(str(p)) ? str(s).slice(str(p).length) : str(s),
    ),
    trimSuffix: f(
      ["string", "string"],
      (x, s) => str(x) !== "" && str(s).endsWith(str(x)) ? str(s).slice(0, -str(x).length) : str(s),
    ),
    replace: f(["string", "string", "string"], (o, n, s) => str(s).replaceAll(str(o), str(n))),
    trunc: f(["int", "string"], (n, s) => {
      const c = Number(n as bigint);
      const chars = [...str(s)];
      return c < 0 ? chars.slice(Math.max(chars.length + c, 0)).join("") : chars.slice(0, c).join("");
    }),
  };
}
