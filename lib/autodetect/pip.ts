/**
 * pip (beyond the Go plugin): `requirements.txt`; caches pip's cache
 * directory as pip itself resolves it: `PIP_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/pip`, else `~/.cache/pip`. Nothing is edited (pip has no
 * per-project configuration file): in a container, set `PIP_CACHE_DIR` to a
 * path in the workspace so later steps see it. Keyed on the requirements.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { findManifest, type Tool } from "./tool.ts";

/** The pip detector. */
export const pip: Tool = {
  name: "pip",
  async detect(ctx) {
    const found = await findManifest(ctx, ["requirements.txt"]);
    if (!found) return undefined;
    const { PIP_CACHE_DIR, XDG_CACHE_HOME, HOME } = ctx.env;
    const dir = PIP_CACHE_DIR
      ? resolve(ctx.cwd, PIP_CACHE_DIR)
      : join(XDG_CACHE_HOME || join(HOME ?? "/root", ".cache"), "pip");
    return { tool: "pip", hash: found.hash, dirs: [dir], files: [found.file] };
  },
};
