/**
 * Helpers shared by the tests: settings built as the CLI builds them, and a
 * logger that keeps its lines.
 *
 * @module
 */
import { Logger } from "../lib/log.ts";
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
