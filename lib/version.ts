/**
 * The ci-cache version (kept equal to `deno.json`'s by a test) and the line
 * `--version` prints: version, Deno version and the commit it was built from.
 *
 * The commit is embedded by `scripts/release.ts`, which rewrites
 * {@link BUILD_COMMIT} in a staged copy of the source before bundling and
 * compiling. Run from a checkout, the commit is read from git; otherwise
 * (a `deno run` from a URL, no git) it is "unknown".
 *
 * @module
 */

/** The version `--version` prints and archives record. */
export const VERSION = "0.1.0";

/** The commit a release was built from; empty in the source tree (the release script fills it in). */
export const BUILD_COMMIT: string = "";

/**
 * The commit this code comes from: {@link BUILD_COMMIT}, else `git rev-parse
 * HEAD` of the checkout the module was loaded from, else "unknown".
 *
 * @example
 * ```ts
 * console.log(await commit()); // "3f2c…" or "unknown"
 * ```
 */
export async function commit(moduleUrl: string = import.meta.url): Promise<string> {
  if (BUILD_COMMIT) return BUILD_COMMIT;
  if (!moduleUrl.startsWith("file:")) return "unknown";
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "HEAD"],
      cwd: new URL(".", moduleUrl),
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    const sha = new TextDecoder().decode(out.stdout).trim();
    return out.success && /^[0-9a-f]{40}$/.test(sha) ? sha : "unknown";
  } catch {
    return "unknown"; // no git, or no permission to run it
  }
}

/**
 * The `--version` line: `ci-cache <version> (deno <version>, commit <sha>)`.
 *
 * @example
 * ```ts
 * console.log(await versionLine()); // ci-cache 0.1.0 (deno 2.9.6, commit 3f2c…)
 * ```
 */
export async function versionLine(): Promise<string> {
  return `ci-cache ${VERSION} (deno ${Deno.version.deno}, commit ${await commit()})`;
}
