/**
 * Node (A§6.1 row 6): `package.json`; caches `D/node_modules`. Keyed on the
 * manifest, as the Go plugin (compatibility); the better template for a
 * custom key is `hashFiles "**\/package-lock.json"` (docs/choosing.md).
 *
 * @module
 */
import { join } from "node:path";
import { findManifest, type Tool } from "./tool.ts";

/** The npm/Node detector. */
export const node: Tool = {
  name: "node",
  async detect(ctx) {
    const found = await findManifest(ctx, ["package.json"]);
    if (!found) return undefined;
    return { tool: "node", hash: found.hash, dirs: [join(found.dir, "node_modules")], files: [found.file] };
  },
};
