import { backendConformance } from "./backend_conformance.ts";
import { createFilesystemBackend, FilesystemBackend } from "../lib/storage/filesystem/backend.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { settingsFrom } from "./support.ts";
import { InvalidSettingsError } from "../lib/storage/backend.ts";
import { Logger } from "../lib/log.ts";

backendConformance("filesystem", async () => {
  const root = await Deno.makeTempDir({ prefix: "cicache-fs-" });
  return {
    backend: new FilesystemBackend(root), // lists by walking the tree: no pages to size
    teardown: () => Deno.remove(root, { recursive: true }),
  };
});

const quiet = new Logger({ sink: () => {} });

Deno.test("filesystem: a missing root says to mount the volume (a settings error, exit 1)", async () => {
  const err = await assertRejects(
    () =>
      createFilesystemBackend(settingsFrom({ PLUGIN_FILESYSTEM_CACHE_ROOT: "/nonexistent/cache" }), quiet),
    InvalidSettingsError,
  );
  assertStringIncludes(err.message, "mounted");
  assertStringIncludes(err.message, "PLUGIN_FILESYSTEM_CACHE_ROOT");
});

Deno.test("filesystem: root / is refused", async () => {
  await assertRejects(
    () => createFilesystemBackend(settingsFrom({ PLUGIN_FILESYSTEM_CACHE_ROOT: "/" }), quiet),
    InvalidSettingsError,
  );
});

Deno.test("filesystem: object names cannot leave the root", async () => {
  const root = await Deno.makeTempDir();
  try {
    const fs = new FilesystemBackend(root);
    await assertRejects(() => fs.stat("../outside"), InvalidSettingsError);
    await assertRejects(() => fs.get("a/../../outside"), InvalidSettingsError);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("filesystem: objects live at <root>/<name> like the Go plugin's", async () => {
  const root = await Deno.makeTempDir();
  try {
    const fs = new FilesystemBackend(root);
    await fs.put("key/node_modules", ReadableStream.from([new TextEncoder().encode("data")]), {});
    assertEquals(await Deno.readTextFile(`${root}/key/node_modules`), "data");
    await fs.delete("key/node_modules");
    assert(!(await Deno.stat(`${root}/key`).then(() => true, () => false)), "empty key directory pruned");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
