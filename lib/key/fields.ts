/**
 * Finds the build-metadata fields a key template uses that are empty, so
 * `npm-{{ .Repo.Name }}` outside Drone warns instead of quietly saving under
 * `npm-`, a prefix of every other `npm-` key (as `hashFiles` warns when it
 * matches nothing).
 *
 * @module
 */
import { GoStruct, type Value } from "./template.ts";

/**
 * The `.Repo.Name`-style field references in `template` whose value in
 * `data` is the empty string, in order of first use, without repeats.
 * References to fields that do not exist are left to the template engine,
 * which reports them.
 *
 * @example
 * ```ts
 * emptyFields("npm-{{ .Repo.Name }}", templateData(settings)); // [".Repo.Name"] outside Drone
 * ```
 */
export function emptyFields(template: string, data: GoStruct): string[] {
  const out: string[] = [];
  for (const action of template.matchAll(/\{\{(.*?)\}\}/gs)) {
    for (const ref of action[1].matchAll(/(?<![\w$)\]])((?:\.[A-Za-z_]\w*)+)/g)) {
      const path = ref[1];
      let value: Value | undefined = data;
      for (const name of path.slice(1).split(".")) {
        value = value instanceof GoStruct ? value.fields.get(name) : undefined;
      }
      if (value === "" && !out.includes(path)) out.push(path);
    }
  }
  return out;
}
