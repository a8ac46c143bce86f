/**
 * Restore you can trust, end to end through the CLI on the filesystem
 * backend (issue 9): a corrupt or truncated cache (tar, gzip, zstd) restored
 * over an existing mount leaves it byte-identical and fails loudly; a Go
 * plugin archive without trailer still restores, unverified; restore without
 * mounts is confined to the workspace, `$HOME`, the temp dir and
 * `PLUGIN_RESTORE_ALLOWED_PATHS`; save validates every mount before any
 * transfer; no mode is a warning; an empty key stores under the mount name.
 */
import { join } from "node:path";
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { run } from "../main.ts";
import { sh } from "./fixtures/archive/helpers.ts";

interface Box {
  dir: string;
  work: string;
  cache: string;
  logs: string[];
  cli(extra: Record<string, string>, args?: string[]): Promise<number>;
  cleanup(): Promise<void>;
}

/** A sandbox whose workspace, `$HOME` and temp dir are separate subdirectories, with `outside/` beside them. */
async function box(): Promise<Box> {
  const dir = await Deno.makeTempDir({ prefix: "cicache-restore-" });
  const work = join(dir, "workspace");
  const cache = join(dir, "cache");
  for (const d of [work, cache, join(dir, "home"), join(dir, "tmp"), join(dir, "outside")]) {
    await Deno.mkdir(d);
  }
  const logs: string[] = [];
  const env = {
    PLUGIN_BACKEND: "filesystem",
    PLUGIN_FILESYSTEM_CACHE_ROOT: cache,
    HOME: join(dir, "home"),
    TMPDIR: join(dir, "tmp"),
  };
  return {
    dir,
    work,
    cache,
    logs,
    cli: (extra, args = []) =>
      run(args, { ...env, ...extra }, { cwd: work, sink: (l) => logs.push(l), print: (t) => logs.push(t) }),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

async function writeTree(root: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await Deno.mkdir(join(root, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, rel), text);
  }
}

/** Every path under `root` with its type, mode, bytes and mtime. */
async function scan(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (path: string, rel: string) => {
    const i = await Deno.lstat(path);
    out[rel] = `${i.isDirectory ? "d" : i.isSymlink ? "l" : "f"} ${i.mode! & 0o7777} ${i.mtime?.getTime()} ${
      i.isFile
        ? new TextDecoder().decode(await Deno.readFile(path))
        : i.isSymlink
        ? await Deno.readLink(path)
        : ""
    }`;
    if (i.isDirectory) {
      for await (const e of Deno.readDir(path)) await walk(join(path, e.name), `${rel}/${e.name}`);
    }
  };
  await walk(root, "");
  return out;
}

const exists = (p: string) => Deno.lstat(p).then(() => true, () => false);

const damages = {
  "a flipped byte": (b: Uint8Array) => {
    const c = b.slice();
    c[Math.floor(c.length / 2)] ^= 0x55;
    return c;
  },
  "a truncation": (b: Uint8Array) => b.slice(0, Math.floor(b.length * 0.7)),
};

for (const format of ["tar", "gzip", "zstd"]) {
  for (const [damage, apply] of Object.entries(damages)) {
    Deno.test(`restore: ${format} cache with ${damage} over an existing mount: a failure, mount byte-identical`, async () => {
      const b = await box();
      try {
        await writeTree(join(b.work, "deps"), {
          "big.txt": "new ".repeat(100_000),
          "a/new.txt": "new",
          "a/b/deep.txt": "new deep",
        });
        const env = { PLUGIN_MOUNT: "deps", PLUGIN_CACHE_KEY: "k", PLUGIN_ARCHIVE_FORMAT: format };
        assertEquals(await b.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
        const object = join(b.cache, "k/deps");
        await Deno.writeFile(object, apply(await Deno.readFile(object)));
        // The existing mount: an older state with overlapping and extra files.
        await Deno.remove(join(b.work, "deps"), { recursive: true });
        await writeTree(join(b.work, "deps"), {
          "big.txt": "old",
          "a/new.txt": "old",
          "only-here.txt": "mine",
        });
        await Deno.symlink("a/new.txt", join(b.work, "deps/link"));
        const before = await scan(join(b.work, "deps"));
        const out = join(b.dir, "out.env");
        assertEquals(await b.cli({ ...env, PLUGIN_RESTORE: "true", DRONE_OUTPUT: out }), 0);
        assertEquals(await scan(join(b.work, "deps")), before, "the existing mount is byte-identical");
        assertEquals([...Deno.readDirSync(b.work)].map((e) => e.name), ["deps"], "no staging left beside it");
        const outputs = await Deno.readTextFile(out);
        assertStringIncludes(outputs, "cache_hit=false");
        assert(!outputs.includes("cache_state=complete"), outputs);
        const important = b.logs.filter((l) => l.includes("[IMPORTANT]"));
        assertEquals(important.length, 1, b.logs.join("\n"));
        assertStringIncludes(important[0], "level=error");
        assertStringIncludes(important[0], "restore cache failed");
        assertStringIncludes(important[0], "deps: corrupt cache");
        assert(
          b.logs.some((l) => /status=failed/.test(l) && /corrupt cache/.test(l) && /mount=deps/.test(l)),
          b.logs.join("\n"),
        );
        assertEquals(await b.cli({ ...env, PLUGIN_RESTORE: "true", PLUGIN_EXIT_CODE: "true" }), 1);
        assertEquals(await scan(join(b.work, "deps")), before);
      } finally {
        await b.cleanup();
      }
    });
  }
}

Deno.test("restore: a valid cache over an existing mount replaces files, merges directories, keeps others", async () => {
  const b = await box();
  try {
    await writeTree(join(b.work, "deps"), { "f.txt": "new", "a/x.txt": "new x" });
    const env = { PLUGIN_MOUNT: "deps", PLUGIN_CACHE_KEY: "k" };
    assertEquals(await b.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
    await Deno.remove(join(b.work, "deps"), { recursive: true });
    await writeTree(join(b.work, "deps"), {
      "f.txt": "old and longer",
      "a/keep.txt": "keep",
      "keep.txt": "k",
    });
    await writeTree(join(b.dir, "outside"), { "target.txt": "outside" });
    await Deno.symlink(join(b.dir, "outside"), join(b.work, "deps/a/x.txt"));
    assertEquals(await b.cli({ ...env, PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await Deno.readTextFile(join(b.work, "deps/f.txt")), "new");
    assertEquals(await Deno.readTextFile(join(b.work, "deps/a/x.txt")), "new x");
    assert((await Deno.lstat(join(b.work, "deps/a/x.txt"))).isFile, "the symlink was replaced, not followed");
    assertEquals(await Deno.readTextFile(join(b.work, "deps/a/keep.txt")), "keep");
    assertEquals(await Deno.readTextFile(join(b.work, "deps/keep.txt")), "k");
    assertEquals([...Deno.readDirSync(join(b.dir, "outside"))].map((e) => e.name), ["target.txt"]);
  } finally {
    await b.cleanup();
  }
});

Deno.test("restore: a Go plugin archive without trailer restores, with the unverified warning", async () => {
  const b = await box();
  try {
    await writeTree(join(b.work, "deps"), { "a.txt": "from go" });
    await Deno.mkdir(join(b.cache, "k"));
    // GNU tar with absolute names, as the Go plugin writes them: no opening header, no trailer.
    const r = await sh(`tar -cPf '${join(b.cache, "k/deps")}' '${join(b.work, "deps")}'`);
    assertEquals(r.code, 0, r.stderr);
    await Deno.remove(join(b.work, "deps"), { recursive: true });
    assertEquals(await b.cli({ PLUGIN_MOUNT: "deps", PLUGIN_CACHE_KEY: "k", PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await Deno.readTextFile(join(b.work, "deps/a.txt")), "from go");
    assert(b.logs.some((l) => /level=warn/.test(l) && /no integrity trailer: restored unverified/.test(l)));
    assert(!b.logs.some((l) => l.includes("[IMPORTANT]")), b.logs.join("\n"));
  } finally {
    await b.cleanup();
  }
});

Deno.test("restore without mounts: a target outside the allowed directories is skipped with a warning", async () => {
  const b = await box();
  try {
    const tool = join(b.dir, "outside/tool");
    await writeTree(tool, { "bin.txt": "tool" });
    await writeTree(join(b.work, "deps"), { "d.txt": "deps" });
    const key = { PLUGIN_CACHE_KEY: "k" };
    assertEquals(await b.cli({ ...key, PLUGIN_MOUNT: `deps,${tool}`, PLUGIN_REBUILD: "true" }), 0);
    await Deno.remove(tool, { recursive: true });
    await Deno.remove(join(b.work, "deps"), { recursive: true });

    assertEquals(await b.cli({ ...key, PLUGIN_RESTORE: "true" }), 0);
    assertEquals(
      await Deno.readTextFile(join(b.work, "deps/d.txt")),
      "deps",
      "inside the workspace: restored",
    );
    assert(!(await exists(tool)), "outside: not restored");
    const warning = b.logs.find((l) => l.includes("skipping an object that would restore outside"));
    assert(warning, b.logs.join("\n"));
    assertStringIncludes(warning, `object=k${tool}`);
    assertStringIncludes(warning, `target=${tool}`);
    assertStringIncludes(warning, "PLUGIN_RESTORE_ALLOWED_PATHS");

    // The setting allows it.
    b.logs.length = 0;
    const allowed = { PLUGIN_RESTORE_ALLOWED_PATHS: join(b.dir, "outside") };
    assertEquals(await b.cli({ ...key, ...allowed, PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await Deno.readTextFile(join(tool, "bin.txt")), "tool");
    await Deno.remove(tool, { recursive: true });

    // Without metadata (a Go plugin object), its absolute names choose the target: confined the same way.
    await Deno.remove(join(b.cache, `k${tool}.cicache-meta.json`));
    b.logs.length = 0;
    assertEquals(await b.cli({ ...key, PLUGIN_RESTORE: "true" }), 0);
    assert(!(await exists(tool)), "outside: not restored");
    assert(
      b.logs.some((l) => l.includes("skipping an object") && l.includes(`target=${tool}`)),
      b.logs.join("\n"),
    );
  } finally {
    await b.cleanup();
  }
});

Deno.test("restore without mounts: hostile cicache_mount metadata and symlink redirects are refused", async () => {
  const b = await box();
  try {
    await writeTree(join(b.work, "deps"), { "d.txt": "deps" });
    const key = { PLUGIN_CACHE_KEY: "k" };
    assertEquals(await b.cli({ ...key, PLUGIN_MOUNT: "deps", PLUGIN_REBUILD: "true" }), 0);
    await Deno.remove(join(b.work, "deps"), { recursive: true });
    const sidecar = join(b.cache, "k/deps.cicache-meta.json");
    const meta = JSON.parse(await Deno.readTextFile(sidecar));

    // `..` in the recorded mount
    await Deno.writeTextFile(sidecar, JSON.stringify({ ...meta, cicache_mount: "../outside/deps" }));
    assertEquals(await b.cli({ ...key, PLUGIN_RESTORE: "true" }), 0);
    assert(
      b.logs.some((l) => l.includes("skipping an object") && l.includes('\\"..\\" segment')),
      b.logs.join("\n"),
    );
    assertEquals([...Deno.readDirSync(join(b.dir, "outside"))], []);

    // a symlink in the workspace pointing outside: lexically inside, physically outside
    await Deno.symlink(join(b.dir, "outside"), join(b.work, "link"));
    await Deno.writeTextFile(sidecar, JSON.stringify({ ...meta, cicache_mount: "link/deps" }));
    b.logs.length = 0;
    assertEquals(await b.cli({ ...key, PLUGIN_RESTORE: "true" }), 0);
    assert(
      b.logs.some((l) => l.includes("skipping an object") && l.includes(join(b.dir, "outside/deps"))),
      b.logs.join("\n"),
    );
    assertEquals([...Deno.readDirSync(join(b.dir, "outside"))], []);

    // an explicit mount is the user's: not confined
    await Deno.writeTextFile(sidecar, JSON.stringify(meta));
    assertEquals(await b.cli({ ...key, PLUGIN_MOUNT: "deps", PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await Deno.readTextFile(join(b.work, "deps/d.txt")), "deps");
  } finally {
    await b.cleanup();
  }
});

Deno.test("save: every mount is validated before any transfer; a bad one uploads nothing", async () => {
  const b = await box();
  try {
    await writeTree(join(b.work, "deps"), { "d.txt": "deps" });
    const code = await b.cli({
      PLUGIN_CACHE_KEY: "k",
      PLUGIN_MOUNT: "deps,../../../escape",
      PLUGIN_REBUILD: "true",
    });
    assertEquals(code, 1);
    assert(
      b.logs.some((l) => l.includes("../../../escape") && l.includes("PLUGIN_MOUNT")),
      b.logs.join("\n"),
    );
    assertEquals([...Deno.readDirSync(b.cache)], [], "no object and no temp file");
  } finally {
    await b.cleanup();
  }
});

Deno.test("no mode at all: a warning naming rebuild, restore and flush; exit 0, 1 with exit_code", async () => {
  const b = await box();
  try {
    assertEquals(await b.cli({ PLUGIN_MOUNT: "deps" }), 0);
    const line = b.logs.find((l) => l.includes("no mode selected"));
    assert(line, b.logs.join("\n"));
    assertStringIncludes(line, "level=warn");
    for (const s of ["PLUGIN_REBUILD", "PLUGIN_RESTORE", "PLUGIN_FLUSH"]) assertStringIncludes(line, s);
    assertEquals(await b.cli({ PLUGIN_MOUNT: "deps", PLUGIN_EXIT_CODE: "true" }), 1);
  } finally {
    await b.cleanup();
  }
});

Deno.test("an empty rendered key stores objects directly under the mount names, as the Go plugin", async () => {
  const b = await box();
  try {
    await writeTree(join(b.work, "deps"), { "d.txt": "deps" });
    const env = { PLUGIN_CACHE_KEY: "{{ if false }}never{{ end }}", PLUGIN_MOUNT: "deps" };
    assertEquals(await b.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
    assert(
      await exists(join(b.cache, "deps")),
      `objects: ${[...Deno.readDirSync(b.cache)].map((e) => e.name)}`,
    );
    await Deno.remove(join(b.work, "deps"), { recursive: true });
    assertEquals(await b.cli({ ...env, PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await Deno.readTextFile(join(b.work, "deps/d.txt")), "deps");
    assert(b.logs.some((l) => l.includes("rendered an empty key")));
  } finally {
    await b.cleanup();
  }
});

/** Whether this process may mount a tmpfs (root in a privileged container or on a CI runner). */
function canMount(): boolean {
  if (Deno.build.os !== "linux") return false;
  const dir = Deno.makeTempDirSync({ prefix: "cicache-mountprobe-" });
  try {
    const ok =
      new Deno.Command("mount", { args: ["-t", "tmpfs", "none", dir], stdout: "null", stderr: "null" })
        .outputSync().success;
    if (ok) new Deno.Command("umount", { args: [dir] }).outputSync();
    return ok;
  } catch {
    return false;
  } finally {
    Deno.removeSync(dir);
  }
}

Deno.test({
  name: "restore: a mount that is a mount point (a volume) is staged inside it, restored and protected",
  ignore: !canMount(),
  fn: async () => {
    const b = await box();
    const deps = join(b.work, "deps");
    await Deno.mkdir(deps);
    const mount = await new Deno.Command("mount", { args: ["-t", "tmpfs", "none", deps] }).output();
    assert(mount.success, "mount tmpfs");
    try {
      await writeTree(deps, { "a/x.txt": "cached", "f.txt": "cached f" });
      const env = { PLUGIN_MOUNT: "deps", PLUGIN_CACHE_KEY: "k" };
      assertEquals(await b.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
      await writeTree(deps, { "a/x.txt": "old", "mine.txt": "mine" });
      assertEquals(await b.cli({ ...env, PLUGIN_RESTORE: "true" }), 0, b.logs.join("\n"));
      assertEquals(await Deno.readTextFile(join(deps, "a/x.txt")), "cached");
      assertEquals(await Deno.readTextFile(join(deps, "mine.txt")), "mine");
      assertEquals(
        [...Deno.readDirSync(deps)].map((e) => e.name).sort(),
        ["a", "f.txt", "mine.txt"],
        "no staging left",
      );
      // corrupt: the mount point's content stays as it was
      const object = join(b.cache, "k/deps");
      const bytes = await Deno.readFile(object);
      bytes[bytes.length >> 1] ^= 0x55;
      await Deno.writeFile(object, bytes);
      await writeTree(deps, { "a/x.txt": "changed" });
      const { "": _rootBefore, ...before } = await scan(deps);
      assertEquals(await b.cli({ ...env, PLUGIN_RESTORE: "true" }), 0);
      // Everything byte-identical; only the mount point's own mtime moved (the staging dir was inside it).
      const { "": _rootAfter, ...after } = await scan(deps);
      assertEquals(after, before);
    } finally {
      await new Deno.Command("umount", { args: [deps] }).output();
      await b.cleanup();
    }
  },
});
