/**
 * Switching from the Go plugin: caches it wrote (GNU-tar-like archives with
 * absolute entry names, no metadata, no integrity trailer, any format)
 * restore through the ci-cache CLI, and ci-cache's objects sit where the Go
 * plugin looks for them.
 */
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { run } from "../main.ts";

async function sh(cmd: string, cwd: string): Promise<void> {
  const out = await new Deno.Command("bash", { args: ["-c", cmd], cwd, stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd}: ${new TextDecoder().decode(out.stderr)}`);
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "cicache-compat-" });
  const cache = join(dir, "cache");
  await Deno.mkdir(cache);
  const logs: string[] = [];
  const env = { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cache };
  const cli = (extra: Record<string, string>, cwd: string) =>
    run([], { ...env, ...extra }, { cwd, sink: (l) => logs.push(l) });
  return { dir, cache, logs, cli };
}

/** Writes a Go-plugin-style object: `tar -P` of an absolute mount path (as filepath.Walk names it). */
async function goPluginObject(
  source: string,
  object: string,
  format: "tar" | "gzip" | "zstd",
): Promise<void> {
  await Deno.mkdir(join(object, ".."), { recursive: true });
  const compress = format === "gzip" ? " | gzip" : format === "zstd" ? " | zstd -q" : "";
  await sh(`tar -P --format=gnu -cf - '${source}'${compress} > '${object}'`, "/");
}

for (const format of ["tar", "gzip", "zstd"] as const) {
  Deno.test(`compat: a Go plugin ${format} cache restores into the mount (workspace moved)`, async () => {
    const { dir, cache, logs, cli } = await setup();
    try {
      const oldWs = join(dir, "old-ws");
      await Deno.mkdir(join(oldWs, "node_modules/pkg"), { recursive: true });
      await Deno.writeTextFile(join(oldWs, "node_modules/pkg/index.js"), "go plugin");
      await Deno.symlink("pkg/index.js", join(oldWs, "node_modules/main.js"));
      await goPluginObject(join(oldWs, "node_modules"), join(cache, "k/node_modules"), format);
      const newWs = join(dir, "new-ws");
      await Deno.mkdir(newWs);
      assertEquals(
        await cli({ PLUGIN_RESTORE: "true", PLUGIN_MOUNT: "node_modules", PLUGIN_CACHE_KEY: "k" }, newWs),
        0,
      );
      assertEquals(await Deno.readTextFile(join(newWs, "node_modules/pkg/index.js")), "go plugin");
      assertEquals(await Deno.readLink(join(newWs, "node_modules/main.js")), "pkg/index.js");
      assert(logs.some((l) => l.includes("verified=false")), "restored unverified, and says so");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("compat: listing restore of a Go plugin object lands at its absolute path", async () => {
  const { dir, cache, cli } = await setup();
  try {
    const m2 = join(dir, "home/.m2/repository");
    await Deno.mkdir(join(m2, "org/x"), { recursive: true });
    await Deno.writeTextFile(join(m2, "org/x/x.pom"), "<project/>");
    // The Go plugin names the object <key>/<absolute mount without its leading slash>.
    await goPluginObject(m2, join(cache, "mvn", m2.slice(1)), "gzip");
    await Deno.remove(m2, { recursive: true });
    assertEquals(await cli({ PLUGIN_RESTORE: "true", PLUGIN_CACHE_KEY: "mvn" }, dir), 0);
    assertEquals(await Deno.readTextFile(join(m2, "org/x/x.pom")), "<project/>");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compat: ci-cache objects are where the Go plugin looks, and GNU tar reads them with -P", async () => {
  const { dir, cache, cli } = await setup();
  try {
    const ws = join(dir, "ws");
    await Deno.mkdir(join(ws, "vendor/lib"), { recursive: true });
    await Deno.writeTextFile(join(ws, "vendor/lib/a.go"), "package lib");
    assertEquals(
      await cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "vendor", PLUGIN_ARCHIVE_FORMAT: "gzip" }, ws),
      0,
    );
    // Default key: md5("master"); the Go plugin restores by extracting absolute names in place.
    const object = join(cache, "eb0a191797624dd3a48fa681d3061212/vendor");
    await Deno.remove(join(ws, "vendor"), { recursive: true });
    await sh(`gzip -dc '${object}' | tar -P -xf -`, "/");
    assertEquals(await Deno.readTextFile(join(ws, "vendor/lib/a.go")), "package lib");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compat: listing restore of a Go plugin ./ object (relative names) lands under the working directory", async () => {
  const { dir, cache, cli } = await setup();
  try {
    const oldWs = join(dir, "old-ws");
    await Deno.mkdir(join(oldWs, "node_modules/pkg"), { recursive: true });
    await Deno.writeTextFile(join(oldWs, "node_modules/pkg/index.js"), "relative");
    // Mount "./node_modules": the Go plugin writes relative names and names the object <key>/node_modules.
    await Deno.mkdir(join(cache, "rel"), { recursive: true });
    await sh(`tar --format=gnu -cf - node_modules | zstd -q > '${join(cache, "rel/node_modules")}'`, oldWs);
    const newWs = join(dir, "new-ws");
    await Deno.mkdir(newWs);
    assertEquals(await cli({ PLUGIN_RESTORE: "true", PLUGIN_CACHE_KEY: "rel" }, newWs), 0);
    assertEquals(await Deno.readTextFile(join(newWs, "node_modules/pkg/index.js")), "relative");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
