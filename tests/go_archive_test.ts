/**
 * Go plugin archives of every shape (issue 9 §4): archives written by Go's
 * own archive/tar exactly as the Go plugin writes them (tests/fixtures/gotar:
 * absolute names, USTAR prefix + name for 101–256 bytes, PAX beyond), where
 * even the mount root's name can need the prefix. They restore through an
 * explicit mount and through the listing restore, whose first-header peek
 * must read the full name to tell absolute archives from `./` ones. And
 * Go's archive/tar reader (what the Go plugin extracts with) reads our tar,
 * gzip and zstd archives to the end.
 */
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { run } from "../main.ts";
import { archive, buildTree, run as exec, sh, snapshot, tempDir } from "./fixtures/archive/helpers.ts";
import { buildGoFixture } from "./fixtures/go.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** A tree whose root path alone is over 100 bytes, with names of every length class. */
async function deepTree(work: string): Promise<string> {
  const root = join(work, "x".repeat(60), "y".repeat(50), "deps");
  assert(root.length > 100 && root.length < 250, `root path of ${root.length} bytes`);
  await Deno.mkdir(join(root, "sub"), { recursive: true });
  await Deno.writeTextFile(join(root, "short.txt"), "short");
  const mid = "m".repeat(Math.max(1, 240 - root.length - 5)); // full name 101-256 bytes: USTAR prefix + name
  await Deno.writeTextFile(join(root, `${mid}.txt`), "prefix");
  const long = join(root, "sub", "l".repeat(200)); // beyond 256 bytes: a PAX path record
  await Deno.writeTextFile(long, "pax");
  await Deno.symlink("short.txt", join(root, "link"));
  return root;
}

Deno.test({
  ...opts,
  name:
    "go archives: written by Go's archive/tar (prefix and PAX names) restore through a mount and a listing",
  fn: async () => {
    const { dir, cleanup } = await tempDir("goarchive");
    try {
      const gotar = await buildGoFixture("gotar", dir);
      const work = join(dir, "work");
      const source = await deepTree(work);
      const reference = await snapshot(source);
      const cache = join(dir, "cache");
      const object = join(cache, "k", source.slice(1)); // the Go plugin's object name: key + absolute path
      await Deno.mkdir(join(object, ".."), { recursive: true });
      const w = await exec(gotar, [source, object]);
      assertEquals(w.code, 0, w.stderr);

      // The root entry's name does not fit 100 bytes: Go split it into prefix + name.
      const head = await Deno.readFile(object);
      const field = (off: number, len: number) =>
        new TextDecoder().decode(head.subarray(off, off + len)).replace(/\0.*$/s, "");
      assert(!field(0, 100).startsWith("/"), `name field: ${field(0, 100)}`);
      assert(field(345, 155).startsWith("/"), `prefix field: ${field(345, 155)}`);
      assertEquals(`${field(345, 155)}/${field(0, 100)}`, source);

      const logs: string[] = [];
      const env = {
        PLUGIN_BACKEND: "filesystem",
        PLUGIN_FILESYSTEM_CACHE_ROOT: cache,
        HOME: join(dir, "home"),
        TMPDIR: join(dir, "tmp"),
        PLUGIN_CACHE_KEY: "k",
        PLUGIN_RESTORE: "true",
      };
      const cli = (extra: Record<string, string>) =>
        run([], { ...env, ...extra }, { cwd: work, sink: (l) => logs.push(l) });

      // Listing restore (no mounts, no metadata): the peek must see the absolute full name.
      await Deno.remove(source, { recursive: true });
      assertEquals(await cli({}), 0, logs.join("\n"));
      assertEquals(await snapshot(source), reference, "restored at its absolute path");
      assert(logs.some((l) => l.includes("restored unverified")), "a Go archive has no trailer: unverified");

      // Explicit mount (the same absolute path, so the same object name as the Go plugin's).
      await Deno.remove(source, { recursive: true });
      assertEquals(await cli({ PLUGIN_MOUNT: source }), 0, logs.join("\n"));
      assert(logs.at(-1)!.includes("restored=1"), logs.at(-1));
      assertEquals(await snapshot(source), reference);
    } finally {
      await cleanup();
    }
  },
});

for (const format of ["tar", "gzip", "zstd"] as const) {
  Deno.test({
    ...opts,
    name: `go archives: Go's archive/tar reads our ${format} archive to the end, every entry, no error`,
    fn: async () => {
      const { dir, cleanup } = await tempDir("goarchive");
      try {
        const gotar = await buildGoFixture("gotar", dir);
        await buildTree(`${dir}/src/m`);
        await Deno.writeFile(`${dir}/archive`, await archive({ mount: "m", cwd: `${dir}/src` }, format));
        const decompress = { tar: "cat", gzip: "gzip -dc", zstd: "zstd -q -dc" }[format];
        const r = await sh(`${decompress} archive | '${gotar}' -list`, dir);
        assertEquals(r.code, 0, r.stderr);
        const lines = r.stdout.trim().split("\n");
        const reference = await snapshot(`${dir}/src/m`);
        // Go sees both global headers, every entry once, and the root again after the trailer.
        assertEquals(lines.filter((l) => l.startsWith("g ")).length, 2);
        const entries = lines.filter((l) => !l.startsWith("g "));
        assertEquals(entries.length, Object.keys(reference).length + 1);
        assertEquals(entries.at(-1), `5 ${dir}/src/m 0`);
        assert(entries.includes(`0 ${dir}/src/m/a/b/c/big.bin ${3 * 1024 * 1024 + 123}`), r.stdout);
      } finally {
        await cleanup();
      }
    },
  });
}
