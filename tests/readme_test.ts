import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { END, SETTINGS_DOC, START, updateSettingsDoc } from "../scripts/settings_doc.ts";
import { SETTING_SPECS } from "../lib/settings.ts";
import { VERSION } from "../lib/version.ts";

const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
const settingsDoc = await Deno.readTextFile(SETTINGS_DOC);

/** Markdown tables up to `deno fmt`'s padding and alignment rows; blank lines dropped. */
function normalize(text: string): string {
  return text.split("\n")
    .map((l) =>
      l.startsWith("|") ? l.replace(/\s*\|\s*/g, "|").replace(/\|:?-+:?(?=\|)/g, "|---") : l.trimEnd()
    )
    .filter((l) => l !== "")
    .join("\n");
}

Deno.test("readme: docs/settings.md matches lib/settings.ts (run scripts/settings_doc.ts to update)", () => {
  assert(settingsDoc.includes(START) && settingsDoc.includes(END), "settings markers present");
  assertEquals(normalize(updateSettingsDoc(settingsDoc)), normalize(settingsDoc));
  for (const spec of SETTING_SPECS) {
    assertStringIncludes(settingsDoc, `\`--${spec.flag}\``);
    for (const e of spec.env) assertStringIncludes(settingsDoc, `\`${e}\``);
  }
});

Deno.test("readme: names the commands a newcomer needs", () => {
  for (const text of ["deno task demo", "deno task test", "deno task bench", "npm install -g deno@2.9.6"]) {
    assertStringIncludes(readme, text);
  }
});

Deno.test("readme: a front door: every install way, links that resolve, under 16 KB", async () => {
  for (
    const text of [
      "releases/download/", // binary
      "docker run", // image
      "deno run -A --no-config --unstable-lazy-dynamic-imports https://", // URL
      "ci-cache.js", // bundle
      "deno install -g", // global install
      "sha256sum -c",
      "docs/settings.md",
    ]
  ) assertStringIncludes(readme, text);
  assert(!readme.includes(START), "the settings tables live in docs/settings.md, not in the README");
  // Every relative link points at a file of the checkout.
  for (const [, target] of readme.matchAll(/\]\(((?!https?:|#)[^)#]+)(#[^)]*)?\)/g)) {
    await Deno.stat(new URL(`../${target}`, import.meta.url)).catch(() => {
      throw new Error(`README links to ${target}, which does not exist`);
    });
  }
  // Every in-page link names a heading.
  const anchors = new Set(
    [...readme.matchAll(/^#+ (.+)$/gm)].map(([, h]) =>
      h.toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-")
    ),
  );
  for (const [, anchor] of readme.matchAll(/\]\(#([^)]+)\)/g)) assert(anchors.has(anchor), `#${anchor}`);
  const size = new TextEncoder().encode(readme).length;
  assert(size < 16_000, `README.md is ${size} bytes: move details to docs/`);
});

Deno.test("readme: install commands pin the current version's tag", () => {
  const tags = [...readme.matchAll(/(?:download\/|ci-cache\/|ci-cache:)(v\d+\.\d+\.\d+)/g)].map((m) => m[1]);
  assert(tags.length >= 5, `pinned tags found: ${tags.length}`);
  for (const tag of tags) assertEquals(tag, `v${VERSION}`, "bump the README's tags with lib/version.ts");
});
