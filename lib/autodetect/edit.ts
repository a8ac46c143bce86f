/**
 * Idempotent edits of tool configuration files for auto-detect. Unlike the
 * Go plugin (A§6.3, A§7.1 13), an edit only adds what is missing: a second
 * run changes nothing, an appended line starts on a line of its own (a
 * newline is added to a file that lacks a final one), a file is never
 * rewritten from scratch, a value the user set is never overridden (a
 * warning says the cache may stay empty), and every edit is logged.
 *
 * @module
 */
import { dirname } from "node:path";
import type { Logger } from "../log.ts";

/** Reads a text file; undefined when it does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`auto-detect: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Writes `content` to `path` through a temporary file and a rename (keeping
 * the mode of an existing file), so an interrupted run never leaves half a
 * configuration file.
 */
export async function writeAtomic(path: string, content: string): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  let mode = 0o644;
  try {
    mode = (await Deno.stat(path)).mode! & 0o7777;
  } catch { /* new file */ }
  const tmp = `${path}.cicache-${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(tmp, content, { mode });
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`auto-detect: cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Appends the `lines` not yet present in the file (compared trimmed), each
 * on its own line; creates the file when missing. Logs the edit. Returns the
 * lines added.
 *
 * @example
 * ```ts
 * await appendMissingLines("/w/.bazelignore", [".bazel-cache"], log, "bazel"); // [".bazel-cache"] once, then []
 * ```
 */
export async function appendMissingLines(
  path: string,
  lines: readonly string[],
  log: Logger,
  tool: string,
): Promise<string[]> {
  const existing = await readOptional(path);
  const present = new Set((existing ?? "").split(/\r?\n/).map((l) => l.trim()));
  const missing = lines.filter((l) => !present.has(l.trim()));
  if (missing.length === 0) {
    log.debug("auto-detect: configuration already in place", { tool, file: path });
    return [];
  }
  const text = existing ?? "";
  const sep = text === "" || text.endsWith("\n") ? "" : "\n";
  await writeAtomic(path, `${text}${sep}${missing.join("\n")}\n`);
  log.info(
    existing === undefined
      ? "auto-detect: created a tool configuration file"
      : "auto-detect: edited a tool configuration file",
    {
      tool,
      file: path,
      added: missing.join(" | "),
    },
  );
  return missing;
}

/** Logs that the user's own setting is kept (so the detected directory may stay empty). */
export function keepUserSetting(
  log: Logger,
  tool: string,
  file: string,
  setting: string,
  want: string,
): void {
  log.warn("auto-detect: keeping the project's own setting; the cached directory may stay empty", {
    tool,
    file,
    setting,
    auto_detect_value: want,
  });
}
