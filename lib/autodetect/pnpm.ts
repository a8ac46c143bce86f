/**
 * pnpm (beyond the Go plugin): `pnpm-lock.yaml`; caches the store
 * `D/.pnpm-store`, set as `store-dir` in `D/.npmrc` unless the project set
 * its own. Keyed on the lockfile.
 *
 * @module
 */
import { join } from "node:path";
import { appendMissingLines, keepUserSetting, readOptional } from "./edit.ts";
import { findManifest, type Tool } from "./tool.ts";

/** The pnpm detector. */
export const pnpm: Tool = {
  name: "pnpm",
  async detect(ctx) {
    const found = await findManifest(ctx, ["pnpm-lock.yaml"]);
    if (!found) return undefined;
    const store = join(found.dir, ".pnpm-store");
    if (ctx.edit) {
      const file = join(found.dir, ".npmrc");
      const want = `store-dir=${store}`;
      const own = /^\s*store-dir\s*=.*$/m.exec(await readOptional(file) ?? "");
      if (own && own[0].trim() !== want) keepUserSetting(ctx.log, "pnpm", file, own[0].trim(), want);
      else await appendMissingLines(file, [want], ctx.log, "pnpm");
    }
    return { tool: "pnpm", hash: found.hash, dirs: [store], files: [found.file] };
  },
};
