/**
 * Renders the cache key from the settings: the user's template (Go
 * text/template over the Drone metadata, see `template.ts`, `metadata.ts`
 * and `helpers.ts`), or the Go plugin's default, the MD5 hex of the branch.
 *
 * Failure policy, compatible with the Go plugin but never silent:
 * - a syntax error is a settings error (exit 1), as the Go plugin's startup
 *   check; it points at the line and column;
 * - an execution error (unknown field, a failing helper) logs a warning
 *   naming the template and the reason, then uses the Go plugin's fallback
 *   key, the MD5 hex of the branch. The Go plugin did the same silently.
 *   `checksum` of a missing file renders `""` with a loud warning, as the Go
 *   plugin renders it (`helpers.ts`), so the key stays the Go plugin's.
 *
 * @module
 */
import { md5 } from "./md5.ts";
import type { Logger } from "../log.ts";
import { describeSource, type Settings, SettingsError } from "../settings.ts";
import { keyFunctions } from "./helpers.ts";
import { templateData } from "./metadata.ts";
import { parseTemplate, type Template, TemplateExecError, TemplateSyntaxError } from "./template.ts";

/** MD5 hex of a string, as the Go plugin's hash key generator. */
export function md5Hex(text: string): string {
  return md5(text);
}

/** The Go plugin's default (and fallback) key: MD5 hex of the commit branch. */
export function defaultKey(settings: Settings): string {
  return md5Hex(settings.commitBranch);
}

/** Parses `template`, turning a syntax error into a {@link SettingsError} that names the setting. */
function parse(template: string, name: string, what: string, log?: Logger): Template {
  try {
    return parseTemplate(template, { name, funcs: keyFunctions({ log }) });
  } catch (err) {
    if (!(err instanceof TemplateSyntaxError)) throw err;
    const excerpt = err.excerpt.split("\n").map((l) => "    " + l).join("\n");
    throw new SettingsError(
      `${what}: ${err.message}\n${excerpt}\n` +
        "  fix the template (Go text/template syntax; fields, helpers and examples: docs/keys.md)",
    );
  }
}

function restoreKeySource(settings: Settings, i: number): string {
  return `${describeSource(settings, "restoreKeys")} entry ${i + 1}`;
}

/**
 * Validates the key template and every restore key at startup: syntax
 * errors (including calls of unknown functions) are settings errors, exit 1.
 * Literal keys always pass.
 *
 * @example
 * ```ts
 * checkKeyTemplate(settings); // throws SettingsError for PLUGIN_CACHE_KEY="{{ .Repo.Name }"
 * ```
 */
export function checkKeyTemplate(settings: Settings): void {
  if (settings.cacheKey !== "") parse(settings.cacheKey, "cacheKey", describeSource(settings, "cacheKey"));
  settings.restoreKeys.forEach((k, i) => parse(k, `restoreKeys[${i}]`, restoreKeySource(settings, i)));
}

/**
 * Renders one template over the build metadata with the key helpers.
 * Throws {@link SettingsError} on a syntax error and
 * {@link TemplateExecError} when execution fails; no fallback here (see
 * {@link renderKey}).
 *
 * @example
 * ```ts
 * await renderTemplate("{{ .Repo.Name }}-{{ arch }}", settings, log); // "app-amd64"
 * ```
 */
export async function renderTemplate(
  template: string,
  settings: Settings,
  log: Logger,
  name = "cacheKey",
): Promise<string> {
  return await parse(template, name, name, log).execute(templateData(settings));
}

/**
 * Returns the cache key. Without a template: {@link defaultKey}. With one:
 * the rendered template, or, when execution fails, a warning naming the
 * template and the reason and then {@link defaultKey} (the Go plugin's
 * fallback). A syntax error throws {@link SettingsError}.
 *
 * @example
 * ```ts
 * const key = await renderKey(settings, log); // "eb0a191797624dd3a48fa681d3061212" on master
 * ```
 */
export async function renderKey(settings: Settings, log: Logger): Promise<string> {
  if (settings.cacheKey === "") return defaultKey(settings);
  const template = parse(settings.cacheKey, "cacheKey", describeSource(settings, "cacheKey"), log);
  let key: string;
  try {
    key = await template.execute(templateData(settings));
  } catch (err) {
    if (!(err instanceof TemplateExecError)) throw err;
    const fallback = defaultKey(settings);
    log.warn(
      "cache key template failed: using the fallback key (MD5 of the branch, as the Go plugin). " +
        "Fix the template so save and restore use the key you meant",
      {
        template: settings.cacheKey,
        reason: err.message,
        branch: settings.commitBranch,
        fallback_key: fallback,
      },
    );
    return fallback;
  }
  if (key === "") {
    log.warn("cache key template rendered an empty key: objects are stored directly under the mount names", {
      template: settings.cacheKey,
    });
  }
  log.debug("cache key rendered", { template: settings.cacheKey, key });
  return key;
}

/**
 * Renders every `PLUGIN_RESTORE_KEYS` entry through the same engine, in
 * order. An entry that fails to execute, or renders empty (an empty prefix
 * would match every cache), is dropped with a warning; syntax errors throw
 * {@link SettingsError}.
 *
 * @example
 * ```ts
 * await renderRestoreKeys(settings, log); // ["app-main-", "app-"]
 * ```
 */
export async function renderRestoreKeys(settings: Settings, log: Logger): Promise<string[]> {
  const out: string[] = [];
  for (const [i, entry] of settings.restoreKeys.entries()) {
    const template = parse(entry, `restoreKeys[${i}]`, restoreKeySource(settings, i), log);
    try {
      const key = await template.execute(templateData(settings));
      if (key !== "") out.push(key);
      else {log.warn("restore key rendered empty: skipped (an empty prefix would match every cache)", {
          template: entry,
        });}
    } catch (err) {
      if (!(err instanceof TemplateExecError)) throw err;
      log.warn("restore key template failed: skipped", { template: entry, reason: err.message });
    }
  }
  return out;
}
