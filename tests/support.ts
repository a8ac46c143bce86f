/**
 * Helpers shared by the tests: settings built as the CLI builds them, and a
 * logger that keeps its lines.
 *
 * @module
 */
import { join } from "node:path";
import { Logger } from "../lib/log.ts";
import { run, type RunOptions } from "../lib/cli.ts";
import { loadSettings, type Settings } from "../lib/settings.ts";

/** Settings as the CLI would parse them from `args` and `env` (save mode by default). */
export function settingsFrom(env: Record<string, string>, args: string[] = ["save"]): Settings {
  const loaded = loadSettings(args, env);
  if (loaded.kind !== "run") throw new Error(`expected settings, got ${loaded.kind}`);
  return loaded.settings;
}

/** A debug-level logger that records its lines, to check what was (not) logged. */
export function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger({ level: "debug", sink: (l) => lines.push(l) }), lines };
}

/** A workspace, a filesystem cache root and the CLI run against them, with its log lines kept. */
export interface Sandbox {
  dir: string;
  work: string;
  cache: string;
  env: Record<string, string>;
  logs: string[];
  /** Runs the CLI with the sandbox env plus `extra`; log lines (and `--help` output) land in `logs`. */
  cli(
    extra: Record<string, string>,
    args?: string[],
    cwd?: string,
    options?: Omit<RunOptions, "cwd" | "sink" | "print">,
  ): Promise<number>;
  cleanup(): Promise<void>;
}

/** A fresh sandbox under a temporary directory (filesystem backend). */
export async function sandbox(): Promise<Sandbox> {
  const dir = await Deno.makeTempDir({ prefix: "cicache-cli-" });
  const work = join(dir, "workspace");
  const cache = join(dir, "cache");
  await Deno.mkdir(work);
  await Deno.mkdir(cache);
  const logs: string[] = [];
  const env = { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cache, HOME: dir };
  return {
    dir,
    work,
    cache,
    env,
    logs,
    cli(extra, args = [], cwd = work, options = {}) {
      return run(args, { ...env, ...extra }, {
        ...options,
        cwd,
        sink: (l) => logs.push(l),
        print: (t) => logs.push(t),
      });
    },
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Writes `files` (relative path → text) under `root`. */
export async function writeTree(root: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await Deno.mkdir(join(root, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, rel), text);
  }
}

/** Reads a tree back: relative path → text, symlinks as `-> target`. */
export async function readTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(d: string, rel: string) {
    for await (const e of Deno.readDir(d)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isSymlink) out[r] = `-> ${await Deno.readLink(join(d, e.name))}`;
      else if (e.isDirectory) await walk(join(d, e.name), r);
      else out[r] = await Deno.readTextFile(join(d, e.name));
    }
  }
  await walk(root, "");
  return out;
}

/** Whether a path exists (not following a final symlink). */
export const exists = (p: string): Promise<boolean> => Deno.lstat(p).then(() => true, () => false);
