/**
 * Go (A§6.1 row 8): `go.mod`; caches the relative directory `.go` (not under
 * the module's directory: the Go plugin's choice, kept for the same object
 * names). Nothing is edited: point `GOPATH`/`GOMODCACHE` at `$PWD/.go` in the
 * build step for the cache to fill.
 *
 * @module
 */
import { findManifest, type Tool } from "./tool.ts";

/** The Go modules detector. */
export const golang: Tool = {
  name: "golang",
  async detect(ctx) {
    const found = await findManifest(ctx, ["go.mod"]);
    if (!found) return undefined;
    return { tool: "golang", hash: found.hash, dirs: [".go"], files: [found.file] };
  },
};
