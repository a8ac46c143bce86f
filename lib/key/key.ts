/**
 * Renders the cache key from the settings: the user's template (Go
 * text/template over the Drone metadata), or the Go plugin's default, the MD5
 * hex of the branch.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Logger } from "../log.ts";
import type { Settings } from "../settings.ts";

/** MD5 hex of a string, as the Go plugin's hash key generator. */
export function md5Hex(text: string): string {
  return createHash("md5").update(text).digest("hex");
}

/** The Go plugin's default (and fallback) key: MD5 hex of the commit branch. */
export function defaultKey(settings: Settings): string {
  return md5Hex(settings.commitBranch);
}

/**
 * Returns the rendered key. Without a template: {@link defaultKey}. A
 * template is used as given for now (templates come with the key issue).
 *
 * @example
 * ```ts
 * const key = await renderKey(settings, log); // "eb0a191797624dd3a48fa681d3061212" on master
 * ```
 */
export function renderKey(settings: Settings, _log: Logger): Promise<string> {
  if (settings.cacheKey === "") return Promise.resolve(defaultKey(settings));
  return Promise.resolve(settings.cacheKey);
}

/**
 * Validates the template at startup (syntax errors are settings errors,
 * exit 1). Literal keys always pass for now.
 */
export function checkKeyTemplate(_settings: Settings): void {}
