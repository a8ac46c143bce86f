/**
 * Gradle (A§6.1 rows 2–3): `build.gradle.kts`, else `build.gradle`; caches
 * `D/.gradle` and sets `systemProp.gradle.user.home=D/.gradle` and
 * `org.gradle.caching=true` in `D/gradle.properties` when the project has
 * not set them itself.
 *
 * @module
 */
import { join } from "node:path";
import { appendMissingLines, keepUserSetting, readOptional } from "./edit.ts";
import { findManifest, type Tool } from "./tool.ts";

/** Keys and values of a Java properties file (`k=v`, `k: v`, `k v`; comments skipped). */
function properties(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith("!")) continue;
    const m = /^([^=:\s]+)\s*[=:\s]\s*(.*)$/.exec(line);
    if (m) map.set(m[1], m[2]);
    else map.set(line, "");
  }
  return map;
}

/** The Gradle detector. */
export const gradle: Tool = {
  name: "gradle",
  async detect(ctx) {
    const found = await findManifest(ctx, ["build.gradle.kts", "build.gradle"]);
    if (!found) return undefined;
    const home = join(found.dir, ".gradle");
    if (ctx.edit) {
      const file = join(found.dir, "gradle.properties");
      const props = properties(await readOptional(file) ?? "");
      const add: string[] = [];
      const own = props.get("systemProp.gradle.user.home");
      if (own === undefined) add.push(`systemProp.gradle.user.home=${home}`);
      else if (own !== home) {
        keepUserSetting(ctx.log, "gradle", file, `systemProp.gradle.user.home=${own}`, home);
      }
      if (!props.has("org.gradle.caching")) add.push("org.gradle.caching=true");
      await appendMissingLines(file, add, ctx.log, "gradle");
    }
    return { tool: "gradle", hash: found.hash, dirs: [home], files: [found.file] };
  },
};
