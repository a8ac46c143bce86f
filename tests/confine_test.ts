/**
 * Where a listing restore may write (`lib/cache/confine.ts`): the workspace
 * (cwd, `HARNESS_WORKSPACE`), `$HOME`, the temp dir (`$TMPDIR`, else /tmp)
 * and `PLUGIN_RESTORE_ALLOWED_PATHS`, lexically and with symlinks resolved.
 */
import { join } from "node:path";
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { allowedRestoreRoots, confineListingTarget } from "../lib/cache/confine.ts";
import type { OpContext } from "../lib/cache/save.ts";
import { capture, settingsFrom } from "./support.ts";
import { tempDir } from "./fixtures/archive/helpers.ts";

Deno.test("confine: the allowed directories, cleaned and without duplicates", () => {
  assertEquals(
    allowedRestoreRoots("/ws", { HOME: "/home/u", HARNESS_WORKSPACE: "/harness/" }, ["rel", "/opt/x/"]),
    [
      "/ws",
      "/harness",
      "/home/u",
      "/tmp",
      "/ws/rel",
      "/opt/x",
    ],
  );
  assertEquals(allowedRestoreRoots("/ws", { TMPDIR: "/ws/tmp" }, []), ["/ws", "/ws/tmp"]);
  // The setting is the user's own (trusted): resolved like any path setting.
  assertEquals(allowedRestoreRoots("/ws", { HOME: "" }, ["/a/../b"]), ["/ws", "/tmp", "/b"]);
});

Deno.test("confine: targets inside pass; outside, .., and symlink redirects are refused naming the setting", async () => {
  const { dir, cleanup } = await tempDir("confine");
  try {
    for (const d of ["ws", "home", "tmp", "outside", "extra"]) await Deno.mkdir(join(dir, d));
    await Deno.symlink(join(dir, "outside"), join(dir, "ws", "link"));
    const env = { HOME: join(dir, "home"), TMPDIR: join(dir, "tmp") };
    const ctx = (allowed: string) =>
      ({
        settings: settingsFrom(allowed ? { PLUGIN_RESTORE_ALLOWED_PATHS: allowed } : {}, ["restore"]),
        env,
        cwd: join(dir, "ws"),
        log: capture().log,
      }) as unknown as OpContext;
    assertEquals(confineListingTarget(ctx(""), "node_modules"), undefined);
    assertEquals(confineListingTarget(ctx(""), join(dir, "home/.m2")), undefined);
    assertEquals(confineListingTarget(ctx(""), join(dir, "tmp/x")), undefined);
    const outside = confineListingTarget(ctx(""), join(dir, "outside/x"));
    assert(outside);
    assertStringIncludes(outside, "PLUGIN_RESTORE_ALLOWED_PATHS");
    assertStringIncludes(outside, join(dir, "outside/x"));
    assertEquals(confineListingTarget(ctx(join(dir, "outside")), join(dir, "outside/x")), undefined);
    assertStringIncludes(confineListingTarget(ctx(""), "a/../../outside")!, '".." segment');
    const redirected = confineListingTarget(ctx(""), "link/x");
    assert(redirected, "a symlink in the workspace that points outside");
    assertStringIncludes(redirected, join(dir, "outside/x"));
    assert(
      confineListingTarget(ctx(join(dir, "extra")), "/etc/cron.d"),
      "other allowed paths do not allow /etc",
    );
  } finally {
    await cleanup();
  }
});
