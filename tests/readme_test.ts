import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { END, START, updateReadme } from "../scripts/settings_doc.ts";
import { SETTING_SPECS } from "../lib/settings.ts";

const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));

/** Markdown tables up to `deno fmt`'s padding and alignment rows; blank lines dropped. */
function normalize(text: string): string {
  return text.split("\n")
    .map((l) =>
      l.startsWith("|") ? l.replace(/\s*\|\s*/g, "|").replace(/\|:?-+:?(?=\|)/g, "|---") : l.trimEnd()
    )
    .filter((l) => l !== "")
    .join("\n");
}

Deno.test("readme: the settings tables match lib/settings.ts (run scripts/settings_doc.ts to update)", () => {
  assert(readme.includes(START) && readme.includes(END), "settings markers present");
  assertEquals(normalize(updateReadme(readme)), normalize(readme));
  for (const spec of SETTING_SPECS) {
    assertStringIncludes(readme, `\`--${spec.flag}\``);
    for (const e of spec.env) assertStringIncludes(readme, `\`${e}\``);
  }
});

Deno.test("readme: names the commands a newcomer needs", () => {
  for (const text of ["deno task demo", "deno task test", "deno task bench", "npm install -g deno@2.9.6"]) {
    assertStringIncludes(readme, text);
  }
});
