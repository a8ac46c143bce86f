import { assertEquals, assertMatch } from "./assert.ts";
import { commit, VERSION, versionLine } from "../lib/version.ts";

const head = new TextDecoder().decode(
  (await new Deno.Command("git", { args: ["rev-parse", "HEAD"], stdout: "piped" }).output()).stdout,
).trim();

Deno.test("version: from a checkout the commit is git's HEAD", async () => {
  assertEquals(await commit(), head);
  assertEquals(await versionLine(), `ci-cache ${VERSION} (deno ${Deno.version.deno}, commit ${head})`);
});

Deno.test("version: loaded from a URL or outside a git checkout the commit is unknown", async () => {
  assertEquals(await commit("https://example.com/ci-cache/lib/version.ts"), "unknown");
  const dir = await Deno.makeTempDir(); // not inside any repository
  try {
    assertEquals(await commit(`file://${dir}/version.ts`), "unknown");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assertMatch(await versionLine(), /^ci-cache \d+\.\d+\.\d+ \(deno /);
});
