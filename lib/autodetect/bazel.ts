/**
 * Bazel (A§6.1 rows 4–5): `MODULE.bazel` (bzlmod), else `WORKSPACE`; caches
 * `D/.bazel-cache` as the repository cache (`common --repository_cache=…` in
 * `D/.bazelrc`), and lists `.bazel-cache` in `D/.bazelignore`. Bazel 9 and
 * newer (major version from `USE_BAZEL_VERSION`, else `D/.bazelversion`)
 * also get `common --repo_contents_cache=` (empty: off), as the Go plugin
 * writes, since its default location would fall inside the workspace.
 *
 * @module
 */
import { join } from "node:path";
import { appendMissingLines, keepUserSetting, readOptional } from "./edit.ts";
import { findManifest, type Tool } from "./tool.ts";

/**
 * Whether the Bazel version is 9 or newer; an unknown version counts as older.
 *
 * @example
 * ```ts
 * await isBazel9OrNewer("/w", { USE_BAZEL_VERSION: "9.0.0" }); // true
 * ```
 */
export async function isBazel9OrNewer(
  dir: string,
  env: Record<string, string | undefined>,
): Promise<boolean> {
  const version = env.USE_BAZEL_VERSION || (await readOptional(join(dir, ".bazelversion")) ?? "");
  const m = /^\s*(\d+)/.exec(version);
  return m !== null && Number(m[1]) >= 9;
}

/** The Bazel detector. */
export const bazel: Tool = {
  name: "bazel",
  async detect(ctx) {
    const found = await findManifest(ctx, ["MODULE.bazel", "WORKSPACE"]);
    if (!found) return undefined;
    const cache = join(found.dir, ".bazel-cache");
    if (ctx.edit) {
      const rc = join(found.dir, ".bazelrc");
      const text = await readOptional(rc) ?? "";
      const want = `common --repository_cache=${cache}`;
      const add: string[] = [];
      const own = text.split(/\r?\n/).map((l) => l.trim()).find((l) =>
        /--repository_cache[=\s]/.test(l) && !l.startsWith("#") && l !== want
      );
      if (own) keepUserSetting(ctx.log, "bazel", rc, own, want);
      else add.push(want);
      if (await isBazel9OrNewer(found.dir, ctx.env) && !/--repo_contents_cache\b/.test(text)) {
        add.push("common --repo_contents_cache=");
      }
      await appendMissingLines(rc, add, ctx.log, "bazel");
      const ignore = join(found.dir, ".bazelignore");
      const ignored = (await readOptional(ignore) ?? "").split(/\r?\n/).map((l) =>
        l.trim().replace(/\/$/, "")
      );
      if (!ignored.includes(".bazel-cache")) {
        await appendMissingLines(ignore, [".bazel-cache"], ctx.log, "bazel");
      }
    }
    return { tool: "bazel", hash: found.hash, dirs: [cache], files: [found.file] };
  },
};
