/**
 * Glob mounts and excludes (lib/cache/mounts.ts), unit level and through the
 * CLI on the filesystem backend: a monorepo with nested node_modules, save
 * with a glob and excludes, restore with the same glob into a fresh checkout
 * and without mounts (listing restore).
 */
import { join } from "node:path";
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { run } from "../main.ts";
import {
  excludeFilter,
  expandMounts,
  globMatches,
  globObjectMatcher,
  isGlobMount,
  loadGlobEngine,
  splitMounts,
} from "../lib/cache/mounts.ts";
import { capture } from "./support.ts";

// picomatch loads on demand (CLI runs load it when a mount or exclude may be a glob); these tests call the
// matchers directly.
await loadGlobEngine(["*"]);

const FIXTURE = new URL("./fixtures/autodetect/monorepo/", import.meta.url).pathname;

async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await Deno.mkdir(join(root, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, rel), text);
  }
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(join(from, e.name), join(to, e.name));
    else await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

async function readTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(d: string, rel: string) {
    for await (const e of Deno.readDir(d)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isSymlink) out[r] = `-> ${await Deno.readLink(join(d, e.name))}`;
      else if (e.isDirectory) await walk(join(d, e.name), r);
      else out[r] = await Deno.readTextFile(join(d, e.name));
    }
  }
  await walk(root, "");
  return out;
}

/** Installed dependencies of the monorepo, with a nested node_modules and tool caches to exclude. */
const INSTALLED: Record<string, string> = {
  "packages/ui/node_modules/react/index.js": "react",
  "packages/ui/node_modules/react/node_modules/loose-envify/index.js": "nested",
  "packages/ui/node_modules/.cache/babel/x.json": "cache",
  "packages/util/node_modules/lodash/lodash.js": "lodash",
  "packages/util/node_modules/.cache/eslint": "cache",
  "packages/util/node_modules/lodash/debug.log": "log",
};

async function monorepo(): Promise<{ dir: string; work: string; cache: string; fresh: string }> {
  const dir = await Deno.makeTempDir({ prefix: "cicache-glob-" });
  const work = join(dir, "w1");
  const fresh = join(dir, "w2");
  const cache = join(dir, "cache");
  await Deno.mkdir(cache);
  await copyDir(FIXTURE, work);
  await copyDir(FIXTURE, fresh);
  await writeFiles(work, INSTALLED);
  return { dir, work, cache, fresh };
}

Deno.test("mounts: ! entries and PLUGIN_EXCLUDE become excludes; glob detection", () => {
  assertEquals(splitMounts(["a", "!**/.cache", "b", "!"], ["*.log", "!tmp"]), {
    mounts: ["a", "b"],
    excludes: ["**/.cache", "*.log", "tmp"],
  });
  for (const g of ["packages/**/node_modules", "*.txt", "a?", "{a,b}/x", "[ab]/x"]) assert(isGlobMount(g), g);
  for (const l of ["node_modules", "/root/.m2", "./vendor", "~/.cache"]) assert(!isGlobMount(l), l);
});

Deno.test("mounts: exclude patterns: names at any depth, paths relative to the workspace, absolute paths", () => {
  const skip = excludeFilter(["**/node_modules/.cache", "*.log", "/opt/x/**", "./build/tmp"], "/w")!;
  assert(skip("/w/packages/a/node_modules/.cache"));
  assert(skip("/w/deep/debug.log"));
  assert(skip("/opt/x/y/z"));
  assert(skip("/w/build/tmp"));
  assert(skip("/home/u/node_modules/.cache"), "relative ** patterns also match outside the workspace");
  assert(!skip("/w/packages/a/node_modules/react"));
  assert(!skip("/w/build/tmp2"));
  assertEquals(excludeFilter([], "/w"), undefined);
});

Deno.test("mounts: glob expansion: no descent into matches, excluded paths or symlinks; nothing matched warns", async () => {
  const { dir, work } = await monorepo();
  try {
    await Deno.mkdir(join(dir, "outside/node_modules"), { recursive: true });
    await Deno.symlink(join(dir, "outside"), join(work, "packages/linked"));
    const { log, lines } = capture();
    const opts = { cwd: work, env: {}, log };
    assertEquals(globMatches("packages/**/node_modules", opts), [
      "packages/ui/node_modules",
      "packages/util/node_modules",
    ]);
    assertEquals(globMatches("./packages/*/node_modules", opts), [
      "./packages/ui/node_modules",
      "./packages/util/node_modules",
    ]);
    assertEquals(globMatches("packages/{ui,nope}/node_modules", opts), ["packages/ui/node_modules"]);
    assertEquals(globMatches("packages/u[it]*/package.json", opts), [
      "packages/ui/package.json",
      "packages/util/package.json",
    ]);
    assertEquals(globMatches(`${work}/packages/*/node_modules`, opts), [
      `${work}/packages/ui/node_modules`,
      `${work}/packages/util/node_modules`,
    ]);
    const exclude = excludeFilter(["packages/util"], work);
    assertEquals(globMatches("packages/**/node_modules", { ...opts, exclude }), ["packages/ui/node_modules"]);
    assertEquals(expandMounts(["nothing/**/here", "api"], opts), ["api"]);
    assertStringIncludes(lines.join("\n"), "glob mount matched nothing");
    // The symlink is a match candidate itself (as a path) but never walked into.
    assertEquals(globMatches("packages/linked/*", opts), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mounts: restore-side matcher maps object names back to mounts", () => {
  const g = globObjectMatcher("./packages/**/node_modules", {});
  assert(g.match("packages/a/node_modules"));
  assert(g.match("packages/a/b/node_modules"));
  assert(!g.match("apps/a/node_modules"));
  assertEquals(g.mountOf("packages/a/node_modules"), "./packages/a/node_modules");
  const abs = globObjectMatcher("$HOME/.cache/*", { HOME: "/root" });
  assert(abs.match("root/.cache/pip"));
  assertEquals(abs.mountOf("root/.cache/pip"), "/root/.cache/pip");
});

Deno.test("mounts: CLI save of a glob with excludes, restore into a fresh checkout with the glob and by listing", async () => {
  const { dir, work, cache, fresh } = await monorepo();
  const logs: string[] = [];
  const env = {
    PLUGIN_BACKEND: "filesystem",
    PLUGIN_FILESYSTEM_CACHE_ROOT: cache,
    PLUGIN_CACHE_KEY: "mono",
    HOME: dir,
  };
  const cli = (extra: Record<string, string>, cwd: string) =>
    run([], { ...env, ...extra }, { cwd, sink: (l) => logs.push(l) });
  try {
    const mounts = "packages/**/node_modules,!**/node_modules/.cache";
    assertEquals(
      await cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: mounts, PLUGIN_EXCLUDE: "*.log" }, work),
      0,
    );
    // One object per match, named as any mount; the nested node_modules is inside its parent's object.
    const objects = Object.keys(await readTree(join(cache, "mono"))).filter((k) =>
      !k.endsWith(".cicache-meta.json")
    );
    assertEquals(objects.sort(), ["packages/ui/node_modules", "packages/util/node_modules"]);
    const expected = Object.fromEntries(
      Object.entries(INSTALLED).filter(([k]) => !k.includes("/.cache/") && !k.endsWith(".log")),
    );

    // A fresh checkout: no node_modules anywhere yet; the same glob restores every match.
    assertEquals(await cli({ PLUGIN_RESTORE: "true", PLUGIN_MOUNT: mounts }, fresh), 0, logs.join("\n"));
    const restored = await readTree(join(fresh, "packages"));
    for (const [rel, text] of Object.entries(expected)) assertEquals(restored[rel.slice(9)], text, rel);
    assert(!Object.keys(restored).some((k) => k.includes(".cache") || k.endsWith(".log")), "excluded");

    // Listing restore (no mounts) brings back the same objects.
    await Deno.remove(join(fresh, "packages/ui/node_modules"), { recursive: true });
    await Deno.remove(join(fresh, "packages/util/node_modules"), { recursive: true });
    assertEquals(await cli({ PLUGIN_RESTORE: "true" }, fresh), 0, logs.join("\n"));
    const listed = await readTree(join(fresh, "packages"));
    for (const [rel, text] of Object.entries(expected)) assertEquals(listed[rel.slice(9)], text, rel);

    // A glob that matches nothing: a warning and exit 0, nothing stored.
    logs.length = 0;
    assertEquals(
      await cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "apps/*/dist", PLUGIN_CACHE_KEY: "k2" }, work),
      0,
    );
    assertStringIncludes(logs.join("\n"), "glob mount matched nothing");
    assertEquals(Object.keys(await readTree(cache)).filter((k) => k.startsWith("k2")), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mounts: the segment-wise matcher agrees with picomatch on whole paths", async () => {
  const { default: picomatch } = await import("../lib/deps/picomatch.ts");
  const patterns = [
    "packages/**/node_modules",
    "**/node_modules",
    "a/**/b/**/c",
    "*/x",
    "**",
    "a/**",
    "**/*.log",
    "src/*a*b*/z",
    "a?c/**/d",
    "x/{a,b}/y",
    "x/{a,b/c}/y",
    "[ab]*/q",
    "**/.cache",
    "a**b/c",
  ];
  const paths = [
    "packages/node_modules",
    "packages/a/node_modules",
    "packages/a/b/node_modules",
    "packages/a/node_modules/x",
    "node_modules",
    "a/b/c",
    "a/x/b/y/c",
    "a/c",
    "a",
    "a/b",
    "q/x",
    "q/r/x",
    "debug.log",
    "d/e/f.log",
    "src/xaybz/z",
    "src/ab/z",
    "src/ba/z",
    "abc/d",
    "abc/e/f/d",
    "x/a/y",
    "x/b/c/y",
    "x/c/y",
    "a1/q",
    "c1/q",
    ".cache",
    "p/.cache",
    "aXb/c",
    "ab/c",
  ];
  for (const pattern of patterns) {
    const ours = globObjectMatcher(pattern, {}).match;
    const theirs = picomatch(pattern, { dot: true });
    for (const path of paths) assertEquals(ours(path), theirs(path), `${pattern} vs ${path}`);
  }
});

Deno.test("mounts: a pathological pattern on a deep tree finishes (backtracking-prone segments pre-checked)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cicache-deep-" });
  try {
    const name = "a".repeat(32);
    let p = dir;
    for (let d = 0; d < 40; d++) {
      await Deno.mkdir(`${p}/${name}`, { recursive: true });
      await Deno.writeTextFile(`${p}/zz`, "");
      p = `${p}/${name}`;
    }
    const opts = { cwd: dir, env: {} };
    // Each would take minutes to hours with a backtracking regular expression on the whole path.
    assertEquals(globMatches("**/a*a*a*a*a*a*a*a*a*a*a*a*a*b", opts), []);
    assertEquals(globMatches("**/**/**/**/**/**/**/**/*a*a*a*a*a*a*a*a*a*a*a*a*/zzz", opts), []);
    assertEquals(globMatches("**/*a*a*a*a*a*a*a*a*a*a*a*a*/zz", opts).length, 39);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mounts: restore-keys fallback with a glob mount finds the newest cache and restores every match", async () => {
  const { dir, work, cache, fresh } = await monorepo();
  const logs: string[] = [];
  const env = { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cache, HOME: dir };
  const cli = (extra: Record<string, string>, cwd: string) =>
    run([], { ...env, ...extra }, { cwd, sink: (l) => logs.push(l) });
  try {
    const mount = { PLUGIN_MOUNT: "packages/*/node_modules" };
    assertEquals(await cli({ ...mount, PLUGIN_REBUILD: "true", PLUGIN_CACHE_KEY: "deps-old" }, work), 0);
    const out = join(dir, "out");
    assertEquals(
      await cli({
        ...mount,
        PLUGIN_RESTORE: "true",
        PLUGIN_CACHE_KEY: "deps-new",
        PLUGIN_RESTORE_KEYS: "deps-",
        DRONE_OUTPUT: out,
      }, fresh),
      0,
      logs.join("\n"),
    );
    assertEquals(await Deno.readTextFile(join(fresh, "packages/ui/node_modules/react/index.js")), "react");
    assertEquals(
      await Deno.readTextFile(join(fresh, "packages/util/node_modules/lodash/lodash.js")),
      "lodash",
    );
    assertStringIncludes(await Deno.readTextFile(out), "cache_key_matched=deps-old");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
