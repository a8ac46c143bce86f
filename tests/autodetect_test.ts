/**
 * Auto-detect (lib/autodetect/): real project layouts from
 * tests/fixtures/autodetect/, each saved then restored through the CLI on
 * the filesystem backend. Expected keys are computed here from the files, as
 * A§6.2 says the Go plugin computes them (MD5 hex of each manifest,
 * concatenated in detection order, under `<account-id>/`), not taken from the
 * code under test.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { run } from "../main.ts";
import { mergeNugetConfig } from "../lib/autodetect/dotnet.ts";
import { goGlobTwoStep, shortest } from "../lib/autodetect/tool.ts";

const FIXTURES = new URL("./fixtures/autodetect/", import.meta.url).pathname;
const ACCOUNT = "acct-7Yx";

function md5(...parts: Uint8Array[]): string {
  const h = createHash("md5");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

interface Project {
  work: string;
  cache: string;
  logs: string[];
  env: Record<string, string>;
  cli(extra?: Record<string, string>): Promise<number>;
  file(rel: string): Promise<Uint8Array>;
  text(rel: string): Promise<string>;
  cleanup(): Promise<void>;
}

/** A copy of one fixture as the workspace, a cache root, and the CLI in plugin mode (env only). */
async function project(fixture: string): Promise<Project> {
  const dir = await Deno.makeTempDir({ prefix: "cicache-auto-" });
  const work = join(dir, "harness");
  const cache = join(dir, "cache");
  await Deno.mkdir(cache);
  await copyDir(join(FIXTURES, fixture), work);
  const logs: string[] = [];
  const env: Record<string, string> = {
    PLUGIN_BACKEND: "filesystem",
    PLUGIN_FILESYSTEM_CACHE_ROOT: cache,
    PLUGIN_AUTO_CACHE: "true",
    PLUGIN_ACCOUNT_ID: ACCOUNT,
    HOME: join(dir, "home"),
  };
  return {
    work,
    cache,
    logs,
    env,
    cli: (extra = {}) => run([], { ...env, ...extra }, { cwd: work, sink: (l) => logs.push(l) }),
    file: (rel) => Deno.readFile(join(work, rel)),
    text: (rel) => Deno.readTextFile(join(work, rel)),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(join(from, e.name), join(to, e.name));
    else await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await Deno.mkdir(join(root, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, rel), text);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The object name of an absolute directory under a key, as A§2.4 lays it out. */
function objectPath(cache: string, key: string, dir: string): string {
  return join(cache, key, dir.replace(/^\/+/, ""));
}

/**
 * Save (build outputs present), check the object names and the key, run
 * save again (idempotent edits), delete the outputs, restore, compare.
 */
async function roundTrip(
  p: Project,
  key: string,
  outputs: Record<string, string>,
  cachedDirs: string[],
  configFiles: string[],
): Promise<void> {
  await writeFiles(p.work, outputs);
  assertEquals(await p.cli({ PLUGIN_REBUILD: "true" }), 0, p.logs.join("\n"));
  assertStringIncludes(p.logs.join("\n"), `key=${key}`);
  for (const d of cachedDirs) {
    const abs = d.startsWith("/") ? d : join(p.work, d);
    const object = d.startsWith("/") ? objectPath(p.cache, key, d) : join(p.cache, key, d);
    assert(await exists(object), `object for ${abs} at ${object}\n${p.logs.join("\n")}`);
  }
  const configs = await Promise.all(configFiles.map((f) => p.text(f)));
  // A second save (and a restore, which prepares too) leaves every configuration file as it was.
  assertEquals(await p.cli({ PLUGIN_REBUILD: "true" }), 0);
  assertEquals(await Promise.all(configFiles.map((f) => p.text(f))), configs);
  for (const d of cachedDirs) await Deno.remove(d.startsWith("/") ? d : join(p.work, d), { recursive: true });
  assertEquals(await p.cli({ PLUGIN_RESTORE: "true" }), 0, p.logs.join("\n"));
  for (const [rel, text] of Object.entries(outputs)) assertEquals(await p.text(rel), text, rel);
  assertEquals(await Promise.all(configFiles.map((f) => p.text(f))), configs);
}

Deno.test("autodetect: maven project: key, .m2/repository, maven.config line appended once on its own line", async () => {
  const p = await project("maven");
  try {
    const key = `${ACCOUNT}/${md5(await p.file("pom.xml"))}`;
    const repo = join(p.work, ".m2/repository");
    await roundTrip(
      p,
      key,
      { ".m2/repository/org/junit/junit-jupiter/5.10.2/junit-jupiter-5.10.2.jar": "jar bytes" },
      [repo],
      [".mvn/maven.config"],
    );
    assertEquals(await p.text(".mvn/maven.config"), `-T 1C\n--batch-mode\n-Dmaven.repo.local=${repo}\n`);
    assertStringIncludes(p.logs.join("\n"), "auto-detect: edited a tool configuration file");
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: gradle Kotlin DSL: .gradle cached, gradle.properties completed without breaking its last line", async () => {
  const p = await project("gradle-kts");
  try {
    const key = `${ACCOUNT}/${md5(await p.file("build.gradle.kts"))}`;
    const home = join(p.work, ".gradle");
    await roundTrip(p, key, { ".gradle/caches/modules-2/files-2.1/okio.jar": "okio" }, [home], [
      "gradle.properties",
    ]);
    assertEquals(
      await p.text("gradle.properties"),
      "org.gradle.jvmargs=-Xmx1g\n# no final newline on the next line\nkotlin.code.style=official\n" +
        `systemProp.gradle.user.home=${home}\norg.gradle.caching=true\n`,
    );
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: bazel workspace (MODULE.bazel wins over WORKSPACE, Bazel 9 from .bazelversion)", async () => {
  const p = await project("bazel");
  try {
    const key = `${ACCOUNT}/${md5(await p.file("MODULE.bazel"))}`;
    const cache = join(p.work, ".bazel-cache");
    await roundTrip(p, key, { ".bazel-cache/content_addressable/sha256/ab/file": "blob" }, [cache], [
      ".bazelrc",
      ".bazelignore",
    ]);
    assertEquals(
      await p.text(".bazelrc"),
      `build --jobs=4\ncommon --repository_cache=${cache}\ncommon --repo_contents_cache=\n`,
    );
    assertEquals(await p.text(".bazelignore"), ".bazel-cache\n");
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: bazel before 9 gets no repo_contents_cache line; USE_BAZEL_VERSION wins over .bazelversion", async () => {
  const p = await project("bazel");
  try {
    assertEquals(await p.cli({ PLUGIN_REBUILD: "true", USE_BAZEL_VERSION: "8.2.1" }), 0);
    assertEquals(
      await p.text(".bazelrc"),
      `build --jobs=4\ncommon --repository_cache=${join(p.work, ".bazel-cache")}\n`,
    );
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: npm project: node_modules under the package.json hash (Go plugin compatible)", async () => {
  const p = await project("npm");
  try {
    const key = `${ACCOUNT}/${md5(await p.file("package.json"))}`;
    await roundTrip(p, key, { "node_modules/left-pad/index.js": "module.exports = pad;" }, [
      join(p.work, "node_modules"),
    ], ["package.json"]);
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: Yarn 1 project: node + yarn keys, only .yarnrc edited (no .yarnrc.yaml), newline added", async () => {
  const p = await project("yarn");
  try {
    const key = `${ACCOUNT}/${md5(await p.file("package.json"))}${md5(await p.file("yarn.lock"))}`;
    const yarnDir = join(p.work, ".yarn");
    await roundTrip(
      p,
      key,
      { "node_modules/is-odd/index.js": "odd", ".yarn/v6/npm-is-odd-3.0.1/package.json": "{}" },
      [join(p.work, "node_modules"), yarnDir],
      [".yarnrc"],
    );
    assertEquals(
      await p.text(".yarnrc"),
      `registry "https://registry.yarnpkg.com"\n--cache-folder ${yarnDir}\n`,
    );
    assert(!await exists(join(p.work, ".yarnrc.yaml")), "no .yarnrc.yaml");
    assert(!await exists(join(p.work, ".yarnrc.yml")), "no .yarnrc.yml for Yarn 1");
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: Yarn 4 (packageManager) edits .yarnrc.yml only, and keeps a cacheFolder the project set", async () => {
  const p = await project("yarn");
  try {
    const pkg = JSON.parse(await p.text("package.json"));
    pkg.packageManager = "yarn@4.5.0";
    await Deno.writeTextFile(join(p.work, "package.json"), JSON.stringify(pkg));
    await Deno.remove(join(p.work, ".yarnrc"));
    assertEquals(await p.cli({ PLUGIN_REBUILD: "true" }), 0);
    assertEquals(await p.text(".yarnrc.yml"), `cacheFolder: "${join(p.work, ".yarn")}"\n`);
    assert(!await exists(join(p.work, ".yarnrc")), "no .yarnrc for Yarn 4");
    await Deno.writeTextFile(
      join(p.work, ".yarnrc.yml"),
      "nodeLinker: node-modules\ncacheFolder: ./my-cache\n",
    );
    assertEquals(await p.cli({ PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await p.text(".yarnrc.yml"), "nodeLinker: node-modules\ncacheFolder: ./my-cache\n");
    assertStringIncludes(p.logs.join("\n"), "keeping the project's own setting");
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: Go module: the relative .go directory, keyed on go.mod", async () => {
  const p = await project("gomod");
  try {
    const key = `${ACCOUNT}/${md5(await p.file("go.mod"))}`;
    await roundTrip(p, key, { ".go/pkg/mod/golang.org/x/text@v0.14.0/go.mod": "module golang.org/x/text" }, [
      ".go",
    ], ["go.mod"]);
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: .NET solution with two projects: one MD5 over both, nuget.config merged (sources and credentials kept)", async () => {
  const p = await project("dotnet");
  try {
    const userConfig = await p.text("App/NuGet.Config");
    // Sorted paths: "App.Lib/App.Lib.csproj" < "App/App.csproj" ('.' before '/').
    const key = `${ACCOUNT}/${md5(await p.file("App.Lib/App.Lib.csproj"), await p.file("App/App.csproj"))}`;
    const libPkgs = join(p.work, "App.Lib/.nuget/packages");
    const appPkgs = join(p.work, "App/.nuget/packages");
    await roundTrip(
      p,
      key,
      {
        "App/.nuget/packages/newtonsoft.json/13.0.3/newtonsoft.json.nuspec": "<package/>",
        "App.Lib/.nuget/packages/.keep": "",
      },
      [libPkgs, appPkgs],
      ["App/NuGet.Config", "App.Lib/nuget.config"],
    );
    const merged = await p.text("App/NuGet.Config");
    for (const kept of userConfig.split("\n").filter((l) => l.trim() !== "")) {
      assertStringIncludes(merged, kept);
    }
    assertStringIncludes(merged, `<add key="globalPackagesFolder" value="${appPkgs}" />`);
    assertEquals(merged.match(/globalPackagesFolder/g)?.length, 1);
    assert(
      !await exists(join(p.work, "App/nuget.config")),
      "the project's NuGet.Config is edited, not shadowed",
    );
    assertStringIncludes(await p.text("App.Lib/nuget.config"), `value="${libPkgs}"`);
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: NUGET_PACKAGES is cached as is and no file is touched", async () => {
  const p = await project("dotnet");
  try {
    await writeFiles(p.work, { "nuget-cache/pkg/x.nupkg": "x" });
    assertEquals(await p.cli({ PLUGIN_REBUILD: "true", NUGET_PACKAGES: "nuget-cache" }), 0);
    assert(!await exists(join(p.work, "App.Lib/nuget.config")));
    assertStringIncludes(p.logs.join("\n"), "nuget-cache");
    const key = `${ACCOUNT}/${md5(await p.file("App.Lib/App.Lib.csproj"), await p.file("App/App.csproj"))}`;
    assert(await exists(objectPath(p.cache, key, join(p.work, "nuget-cache"))));
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: monorepo mixing maven, node, yarn and go: key in detection order, every directory", async () => {
  const p = await project("monorepo");
  try {
    const key = `${ACCOUNT}/` + md5(await p.file("api/pom.xml")) + md5(await p.file("package.json")) +
      md5(await p.file("yarn.lock")) + md5(await p.file("worker/go.mod"));
    await roundTrip(
      p,
      key,
      {
        "api/.m2/repository/junit/junit.jar": "jar",
        "node_modules/react/index.js": "react",
        ".yarn/cache/react.zip": "zip",
        ".go/pkg/mod/cache.txt": "go",
      },
      [join(p.work, "api/.m2/repository"), join(p.work, "node_modules"), join(p.work, ".yarn"), ".go"],
      ["api/.mvn/maven.config", ".yarnrc"],
    );
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: pnpm, pip and cargo (beyond the Go plugin) keyed on their lockfiles after the Go plugin's part", async () => {
  const p = await project("extras");
  try {
    const cargoHome = join(p.work, "..", "cargo-home");
    const pipCache = join(p.work, "..", "pip-cache");
    const key = `${ACCOUNT}/` + md5(await p.file("package.json")) + md5(await p.file("pnpm-lock.yaml")) +
      md5(await p.file("requirements.txt")) + md5(await p.file("Cargo.lock"));
    Object.assign(p.env, { CARGO_HOME: cargoHome, PIP_CACHE_DIR: pipCache });
    await roundTrip(
      p,
      key,
      {
        ".pnpm-store/v3/files/00/abc": "blob",
        "node_modules/ms/index.js": "ms",
        "../pip-cache/http/x": "wheel",
        "../cargo-home/registry/index/x": "idx",
        "../cargo-home/git/db/x": "git",
      },
      [
        join(p.work, ".pnpm-store"),
        join(p.work, "node_modules"),
        pipCache,
        join(cargoHome, "registry"),
        join(cargoHome, "git"),
      ],
      [".npmrc"],
    );
    assertEquals(await p.text(".npmrc"), `store-dir=${join(p.work, ".pnpm-store")}\n`);
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: user mounts switch detection off (no edits); key = <account>/<cache-key> or <account>/default", async () => {
  const p = await project("maven");
  try {
    await writeFiles(p.work, { "target/classes/App.class": "class" });
    assertEquals(await p.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "target" }), 0);
    assert(await exists(join(p.cache, ACCOUNT, "default", "target")));
    assertEquals(await p.text(".mvn/maven.config"), "-T 1C\n--batch-mode", "maven.config untouched");
    assertEquals(
      await p.cli({
        PLUGIN_REBUILD: "true",
        PLUGIN_MOUNT: "target",
        PLUGIN_CACHE_KEY: "{{ .Commit.Branch }}-x",
      }),
      0,
    );
    assert(await exists(join(p.cache, ACCOUNT, "master-x", "target")), "default branch master");
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: a key template that fails falls back to MD5(account id + branch)", async () => {
  const p = await project("npm");
  try {
    await writeFiles(p.work, { "node_modules/a.js": "a" });
    assertEquals(
      await p.cli({ PLUGIN_REBUILD: "true", PLUGIN_CACHE_KEY: "{{ .Nope }}", DRONE_COMMIT_BRANCH: "dev" }),
      0,
    );
    const fallback = createHash("md5").update(`${ACCOUNT}dev`).digest("hex");
    assert(await exists(objectPath(p.cache, fallback, join(p.work, "node_modules"))), p.logs.join("\n"));
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: nothing detected and no key/mounts does nothing; early exit skips mounts without a key", async () => {
  const p = await project("npm");
  try {
    await Deno.remove(join(p.work, "package.json"));
    assertEquals(await p.cli({ PLUGIN_REBUILD: "true" }), 0);
    assertStringIncludes(p.logs.join("\n"), "no build tool detected");
    assertEquals([...Deno.readDirSync(p.cache)].length, 0);
    await writeFiles(p.work, { "out/a": "a" });
    assertEquals(
      await p.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "out", PLUGIN_AUTO_CACHE_EARLY_EXIT: "true" }),
      0,
    );
    assertStringIncludes(
      p.logs.join("\n"),
      "A key must be provided if any custom paths are used. Skipping cache",
    );
    assertEquals([...Deno.readDirSync(p.cache)].length, 0);
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: a project's own maven repository is kept (restore prepares too)", async () => {
  const p = await project("maven");
  try {
    await Deno.writeTextFile(join(p.work, ".mvn/maven.config"), "-Dmaven.repo.local=/opt/m2\n");
    assertEquals(await p.cli({ PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await p.text(".mvn/maven.config"), "-Dmaven.repo.local=/opt/m2\n");
    assertStringIncludes(p.logs.join("\n"), "keeping the project's own setting");
  } finally {
    await p.cleanup();
  }
});

Deno.test("autodetect: Go-style manifest search: root first, then one level, shortest path, last on ties", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cicache-glob-" });
  try {
    await writeFiles(dir, {
      "b/pom.xml": "",
      "a/pom.xml": "",
      "ccc/pom.xml": "",
      "a/deep/pom.xml": "",
      ".hidden/pom.xml": "",
    });
    const found = goGlobTwoStep(dir, "pom.xml");
    assertEquals(found, [".hidden/pom.xml", "a/pom.xml", "b/pom.xml", "ccc/pom.xml"]);
    assertEquals(shortest(found), "b/pom.xml");
    await writeFiles(dir, { "pom.xml": "" });
    assertEquals(goGlobTwoStep(dir, "pom.xml"), ["pom.xml"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autodetect: nuget.config merge: config element, self-closing, missing, commented out, custom folder kept", () => {
  const f = "/w/App/.nuget/packages";
  const add = `<add key="globalPackagesFolder" value="${f}" />`;
  assertEquals(
    mergeNugetConfig(
      '<configuration>\n  <config>\n    <add key="x" value="1" />\n  </config>\n</configuration>\n',
      f,
      "/w/App",
    ),
    `<configuration>\n  <config>\n    <add key="x" value="1" />\n    ${add}\n  </config>\n</configuration>\n`,
  );
  assertEquals(
    mergeNugetConfig("<configuration>\n  <config />\n</configuration>", f, "/w/App"),
    `<configuration>\n  <config>\n    ${add}\n  </config>\n</configuration>`,
  );
  assertEquals(
    mergeNugetConfig("<configuration>\n  <!-- <config></config> -->\n</configuration>\n", f, "/w/App"),
    `<configuration>\n  <!-- <config></config> -->\n  <config>\n    ${add}\n  </config>\n</configuration>\n`,
  );
  assertEquals(
    mergeNugetConfig(`<configuration><config>${add}</config></configuration>`, f, "/w/App"),
    undefined,
  );
  assertEquals(
    mergeNugetConfig(
      `<configuration><config><add key="globalPackagesFolder" value=".nuget/packages"/></config></configuration>`,
      f,
      "/w/App",
    ),
    undefined,
  );
  assertEquals(
    mergeNugetConfig(
      `<configuration><config><add key="globalPackagesFolder" value="/opt/nuget"/></config></configuration>`,
      f,
      "/w/App",
    ),
    { own: "/opt/nuget" },
  );
  assertEquals(mergeNugetConfig("not xml", f, "/w/App"), { invalid: true });
});
