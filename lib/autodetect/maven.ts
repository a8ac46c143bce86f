/**
 * Maven (A§6.1 row 1): `pom.xml`; caches `D/.m2/repository` and points Maven
 * there with `-Dmaven.repo.local=…` in `D/.mvn/maven.config` (on its own
 * line: Maven 3.9 reads one argument per line). A repository the project set
 * itself is kept.
 *
 * @module
 */
import { join } from "node:path";
import { appendMissingLines, keepUserSetting, readOptional } from "./edit.ts";
import { findManifest, type Tool } from "./tool.ts";

/** The Maven detector. */
export const maven: Tool = {
  name: "maven",
  async detect(ctx) {
    const found = await findManifest(ctx, ["pom.xml"]);
    if (!found) return undefined;
    const repo = join(found.dir, ".m2", "repository");
    if (ctx.edit) {
      const file = join(found.dir, ".mvn", "maven.config");
      const want = `-Dmaven.repo.local=${repo}`;
      const tokens = (await readOptional(file) ?? "").split(/\s+/);
      const own = tokens.find((t) => t.startsWith("-Dmaven.repo.local=") && t !== want);
      if (own) keepUserSetting(ctx.log, "maven", file, own, want);
      else await appendMissingLines(file, tokens.includes(want) ? [] : [want], ctx.log, "maven");
    }
    return { tool: "maven", hash: found.hash, dirs: [repo], files: [found.file] };
  },
};
