/**
 * .NET (A§6.1 rows 9–11, A§6.4): `*.csproj`, else `*.vbproj`, else
 * `*.fsproj`; every project counts (sorted; one MD5 over all of them). Each
 * project directory `P` caches `P/.nuget/packages`, or `$NUGET_PACKAGES`
 * when set (then nothing is edited).
 *
 * The project's NuGet configuration gets `globalPackagesFolder` =
 * `P/.nuget/packages`, merged into the file: sources, credentials, comments
 * and formatting stay as they were (the Go plugin re-marshalled the file from
 * a minimal struct and lost them). An existing `nuget.config`, `NuGet.config`
 * or `NuGet.Config` is edited rather than shadowed by a new one. A folder the
 * project set itself is kept with a warning (the Go plugin failed the run).
 *
 * @module
 */
import { join, posix, resolve } from "node:path";
import { keepUserSetting, readOptional, writeAtomic } from "./edit.ts";
import { goGlobTwoStep, md5Files, type Tool, type ToolContext } from "./tool.ts";

/** File names NuGet reads in a directory, in its order. */
const CONFIG_NAMES = ["nuget.config", "NuGet.config", "NuGet.Config"];

/** Same-length text with XML comments blanked, so searches skip commented-out elements. */
function maskComments(text: string): string {
  return text.replace(/<!--[\s\S]*?-->/g, (m) => m.replace(/[^\n]/g, " "));
}

/** Leading whitespace of the line holding `index`. */
function indentAt(text: string, index: number): string {
  const start = text.lastIndexOf("\n", index - 1) + 1;
  return /^[ \t]*/.exec(text.slice(start))![0];
}

/**
 * Merges `globalPackagesFolder` into a NuGet configuration text. Returns the
 * new text, `undefined` when nothing needs to change, or `{ own }` when the
 * file sets another folder (kept), or `{ invalid }` when it is not a NuGet
 * configuration at all.
 *
 * @example
 * ```ts
 * mergeNugetConfig("<configuration>\n</configuration>\n", "/w/.nuget/packages", "/w");
 * // "<configuration>\n  <config>\n    <add key=\"globalPackagesFolder\" value=\"/w/.nuget/packages\" />\n  </config>\n</configuration>\n"
 * ```
 */
export function mergeNugetConfig(
  text: string,
  folder: string,
  projectDir: string,
): string | undefined | { own: string } | { invalid: true } {
  const masked = maskComments(text);
  const existing =
    /<add\b(?=[^>]*\bkey\s*=\s*["']globalPackagesFolder["'])[^>]*\bvalue\s*=\s*["']([^"']*)["'][^>]*>/i
      .exec(masked);
  if (existing) {
    const value = existing[1];
    const accepted = [folder, ".nuget/packages", "./.nuget/packages"];
    if (accepted.includes(value) || posix.resolve(projectDir, value) === folder) return undefined;
    return { own: value };
  }
  const add = `<add key="globalPackagesFolder" value="${folder}" />`;
  const close = /<\/config\s*>/.exec(masked);
  if (close && /<config(\s[^>]*)?>/.test(masked.slice(0, close.index))) {
    const inner = indentAt(text, close.index);
    const lineStart = text.lastIndexOf("\n", close.index - 1) + 1;
    const onOwnLine = text.slice(lineStart, close.index).trim() === "";
    const insertAt = onOwnLine ? lineStart : close.index;
    const piece = onOwnLine ? `${inner}  ${add}\n` : `\n${inner}  ${add}\n${inner}`;
    return text.slice(0, insertAt) + piece + text.slice(insertAt);
  }
  const selfClosing = /<config\s*\/>/.exec(masked);
  if (selfClosing) {
    const ind = indentAt(text, selfClosing.index);
    return text.slice(0, selfClosing.index) + `<config>\n${ind}  ${add}\n${ind}</config>` +
      text.slice(selfClosing.index + selfClosing[0].length);
  }
  const end = /<\/configuration\s*>/.exec(masked);
  if (end) {
    const ind = indentAt(text, end.index);
    const lineStart = text.lastIndexOf("\n", end.index - 1) + 1;
    const onOwnLine = text.slice(lineStart, end.index).trim() === "";
    const block = `${ind}  <config>\n${ind}    ${add}\n${ind}  </config>\n`;
    if (onOwnLine) return text.slice(0, lineStart) + block + text.slice(lineStart);
    return text.slice(0, end.index) + "\n" + block + ind + text.slice(end.index);
  }
  const empty = /<configuration\s*\/>/.exec(masked);
  if (empty) {
    return text.slice(0, empty.index) +
      `<configuration>\n  <config>\n    ${add}\n  </config>\n</configuration>` +
      text.slice(empty.index + empty[0].length);
  }
  return { invalid: true };
}

async function prepareProject(ctx: ToolContext, dir: string, folder: string): Promise<void> {
  let file: string | undefined;
  let text: string | undefined;
  for (const name of CONFIG_NAMES) {
    text = await readOptional(join(dir, name));
    if (text !== undefined) {
      file = join(dir, name);
      break;
    }
  }
  if (file === undefined || text === undefined) {
    const path = join(dir, "nuget.config");
    await writeAtomic(
      path,
      `<?xml version="1.0" encoding="utf-8"?>\n<configuration>\n  <config>\n` +
        `    <add key="globalPackagesFolder" value="${folder}" />\n  </config>\n</configuration>\n`,
    );
    ctx.log.info("auto-detect: created a tool configuration file", {
      tool: "dotnet",
      file: path,
      added: `globalPackagesFolder=${folder}`,
    });
    return;
  }
  const merged = mergeNugetConfig(text, folder, dir);
  if (merged === undefined) return;
  if (typeof merged === "object") {
    if ("own" in merged) {
      keepUserSetting(ctx.log, "dotnet", file, `globalPackagesFolder=${merged.own}`, folder);
    } else ctx.log.warn("auto-detect: not a NuGet configuration file; left alone", { tool: "dotnet", file });
    return;
  }
  await writeAtomic(file, merged);
  ctx.log.info("auto-detect: edited a tool configuration file", {
    tool: "dotnet",
    file,
    added: `globalPackagesFolder=${folder}`,
  });
}

/** The .NET detector. */
export const dotnet: Tool = {
  name: "dotnet",
  async detect(ctx) {
    for (const pattern of ["*.csproj", "*.vbproj", "*.fsproj"]) {
      const files = goGlobTwoStep(ctx.cwd, pattern).sort();
      if (files.length === 0) continue;
      const projectDirs = [...new Set(files.map((f) => posix.dirname(resolve(ctx.cwd, f))))].sort();
      const override = ctx.env.NUGET_PACKAGES;
      const dirs: string[] = [];
      for (const dir of projectDirs) {
        const folder = override ? resolve(ctx.cwd, override) : join(dir, ".nuget", "packages");
        if (!dirs.includes(folder)) dirs.push(folder);
        if (!override && ctx.edit) await prepareProject(ctx, dir, folder);
      }
      return { tool: "dotnet", hash: await md5Files(ctx.cwd, files), dirs, files };
    }
    return undefined;
  },
};
