/**
 * Cargo (beyond the Go plugin): `Cargo.lock`; caches the registry and git
 * checkouts under `CARGO_HOME` (default `~/.cargo`): `registry` and `git`.
 * Nothing is edited. Keyed on the lockfile.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { findManifest, type Tool } from "./tool.ts";

/** The Cargo detector. */
export const cargo: Tool = {
  name: "cargo",
  async detect(ctx) {
    const found = await findManifest(ctx, ["Cargo.lock"]);
    if (!found) return undefined;
    const home = ctx.env.CARGO_HOME
      ? resolve(ctx.cwd, ctx.env.CARGO_HOME)
      : join(ctx.env.HOME ?? "/root", ".cargo");
    return {
      tool: "cargo",
      hash: found.hash,
      dirs: [join(home, "registry"), join(home, "git")],
      files: [found.file],
    };
  },
};
