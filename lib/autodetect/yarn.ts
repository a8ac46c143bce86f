/**
 * Yarn (A§6.1 row 7): `yarn.lock`; caches `D/.yarn` and points Yarn's cache
 * there in the one file the project's Yarn reads (the Go plugin appends to
 * both `.yarnrc` and `.yarnrc.yaml` every run): Yarn 1 reads `.yarnrc`
 * (`--cache-folder D/.yarn`), Yarn 2+ reads `.yarnrc.yml`, or the name in
 * `YARN_RC_FILENAME` (`cacheFolder: "D/.yarn"`). A cache folder the project
 * set itself is kept.
 *
 * @module
 */
import { join } from "node:path";
import { appendMissingLines, keepUserSetting, readOptional } from "./edit.ts";
import { findManifest, type Tool } from "./tool.ts";

/**
 * The Yarn major version a project uses: `packageManager` in package.json,
 * else 2 when it has a `.yarnrc.yml` or a Berry lockfile (`__metadata:`),
 * else 1.
 *
 * @example
 * ```ts
 * await yarnMajor("/w"); // 1 for a classic project
 * ```
 */
export async function yarnMajor(dir: string): Promise<number> {
  const pkg = await readOptional(join(dir, "package.json"));
  if (pkg) {
    try {
      const pm = JSON.parse(pkg).packageManager;
      const m = typeof pm === "string" ? /^yarn@(\d+)/.exec(pm) : null;
      if (m) return Number(m[1]);
    } catch { /* not JSON: decide from the other files */ }
  }
  if (await readOptional(join(dir, ".yarnrc.yml")) !== undefined) return 2;
  if ((await readOptional(join(dir, "yarn.lock")) ?? "").includes("\n__metadata:")) return 2;
  return 1;
}

/** The Yarn detector. */
export const yarn: Tool = {
  name: "yarn",
  async detect(ctx) {
    const found = await findManifest(ctx, ["yarn.lock"]);
    if (!found) return undefined;
    const cache = join(found.dir, ".yarn");
    if (ctx.edit) {
      if (await yarnMajor(found.dir) >= 2) {
        const file = join(found.dir, ctx.env.YARN_RC_FILENAME || ".yarnrc.yml");
        const own = /^cacheFolder\s*:.*$/m.exec(await readOptional(file) ?? "");
        const want = `cacheFolder: "${cache}"`;
        if (own && own[0].trim() !== want) keepUserSetting(ctx.log, "yarn", file, own[0].trim(), want);
        else await appendMissingLines(file, [want], ctx.log, "yarn");
      } else {
        const file = join(found.dir, ".yarnrc");
        const want = `--cache-folder ${cache}`;
        const own = /^\s*(?:--)?cache-folder\b.*$/m.exec(await readOptional(file) ?? "");
        if (own && own[0].trim() !== want) keepUserSetting(ctx.log, "yarn", file, own[0].trim(), want);
        else await appendMissingLines(file, [want], ctx.log, "yarn");
      }
    }
    return { tool: "yarn", hash: found.hash, dirs: [cache], files: [found.file] };
  },
};
