/**
 * End-to-end tests through the CLI (`run(args, env)`), mostly in env-only
 * plugin mode exactly as a Drone step runs it, on the filesystem backend.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch, assertNotEquals, assertStringIncludes } from "./assert.ts";
import { exists, readTree, sandbox, writeTree } from "./support.ts";

const NODE_MODULES = {
  "left-pad/index.js": "module.exports = 1;\n",
  "left-pad/package.json": '{"name":"left-pad"}',
  "a/b/c/deep.txt": "deep",
};

for (const format of ["tar", "gzip", "zstd"]) {
  Deno.test(`cli: plugin-mode save then restore round trip (${format})`, async () => {
    const sb = await sandbox();
    try {
      await writeTree(join(sb.work, "node_modules"), NODE_MODULES);
      await Deno.symlink("../left-pad/index.js", join(sb.work, "node_modules/a/link.js"));
      const settings = {
        PLUGIN_MOUNT: "node_modules",
        PLUGIN_CACHE_KEY: "k1",
        PLUGIN_ARCHIVE_FORMAT: format,
      };
      assertEquals(await sb.cli({ ...settings, PLUGIN_REBUILD: "true" }), 0);
      assert(await exists(join(sb.cache, "k1/node_modules")), "object at <root>/<key>/<mount>");
      const before = await readTree(join(sb.work, "node_modules"));
      await Deno.remove(join(sb.work, "node_modules"), { recursive: true });
      assertEquals(await sb.cli({ ...settings, PLUGIN_RESTORE: "true" }), 0);
      assertEquals(await readTree(join(sb.work, "node_modules")), before);
      assert(sb.logs.some((l) => l.includes("status=saved") && l.includes("ratio=")), "save summary line");
      assert(sb.logs.some((l) => l.includes("status=restored")), "restore line per mount");
      assert(
        sb.logs.some((l) => l.includes('msg="save done"') && l.includes("node_modules: saved")),
        "summary",
      );
    } finally {
      await sb.cleanup();
    }
  });
}

Deno.test("cli: the default key is the MD5 of the branch", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "vendor"), { "x.txt": "x" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "vendor" }), 0);
    assert(await exists(join(sb.cache, "eb0a191797624dd3a48fa681d3061212/vendor")), "md5(master)/vendor");
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: a missing mount is named, other mounts still save; exit-code makes it fail", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "present"), { "f.txt": "here" });
    const env = { PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "present,absent", PLUGIN_CACHE_KEY: "k" };
    assertEquals(await sb.cli(env), 0);
    assert(await exists(join(sb.cache, "k/present")));
    assert(!(await exists(join(sb.cache, "k/absent"))));
    const important = sb.logs.find((l) => l.includes("[IMPORTANT] build cache"));
    assert(important, "an [IMPORTANT] line");
    assertStringIncludes(important, "absent");
    assertEquals(await sb.cli({ ...env, PLUGIN_EXIT_CODE: "true" }), 1);
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: override=false skips existing objects without touching them", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "dist"), { "v.txt": "one" });
    const env = { PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "dist", PLUGIN_CACHE_KEY: "k" };
    assertEquals(await sb.cli(env), 0);
    const first = await Deno.readFile(join(sb.cache, "k/dist"));
    await writeTree(join(sb.work, "dist"), { "v.txt": "two, longer" });
    assertEquals(await sb.cli({ ...env, PLUGIN_OVERRIDE: "false" }), 0);
    assertEquals(await Deno.readFile(join(sb.cache, "k/dist")), first);
    assert(sb.logs.some((l) => l.includes("status=skipped")));
    assertEquals(await sb.cli(env), 0);
    assertNotEquals(await Deno.readFile(join(sb.cache, "k/dist")), first);
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: a restore miss is soft unless exit-code or fail-restore-if-key-not-present", async () => {
  const sb = await sandbox();
  try {
    const env = { PLUGIN_RESTORE: "true", PLUGIN_MOUNT: "node_modules", PLUGIN_CACHE_KEY: "nothing-here" };
    const out = join(sb.dir, "out.env");
    assertEquals(await sb.cli({ ...env, DRONE_OUTPUT: out }), 0);
    const miss = sb.logs.find((l) =>
      l.includes("[IMPORTANT] restore cache, cache miss for key nothing-here")
    );
    assert(miss, "miss is logged as [IMPORTANT]");
    assert(miss.startsWith("level=warn"), `a miss is a warning, not an error: ${miss}`);
    assertEquals((await Deno.readTextFile(out)).trim().split("\n"), [
      "cache_hit=false",
      "cache_state=miss",
      "cache_key_matched=",
    ]);
    assertEquals(await sb.cli({ ...env, PLUGIN_EXIT_CODE: "true" }), 1);
    assertEquals(await sb.cli({ ...env, PLUGIN_FAIL_RESTORE_IF_KEY_NOT_PRESENT: "true" }), 1);
    assertEquals(
      await sb.cli({ PLUGIN_RESTORE: "true", PLUGIN_CACHE_KEY: "nothing-here" }),
      0,
      "listing miss",
    );
    assert(!(await exists(join(sb.work, "node_modules"))), "a miss creates nothing");
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: step outputs and metrics file on an exact hit", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "a"), { "1.txt": "12345" });
    await writeTree(join(sb.work, "b"), { "2.txt": "123" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "a,b", PLUGIN_CACHE_KEY: "k" }), 0);
    const out = join(sb.dir, "out.env");
    const metrics = join(sb.dir, "metrics/cache.json");
    assertEquals(
      await sb.cli({
        PLUGIN_RESTORE: "true",
        PLUGIN_MOUNT: "a,b",
        PLUGIN_CACHE_KEY: "k",
        DRONE_OUTPUT: out,
        PLUGIN_CACHE_INTEL_METRICS_FILE: metrics,
      }),
      0,
    );
    const lines = (await Deno.readTextFile(out)).trim().split("\n").sort();
    assertEquals(lines, ["cache_hit=true", "cache_key_matched=k", "cache_state=complete"]);
    const text = await Deno.readTextFile(metrics);
    assertStringIncludes(text, '\t{\n\t\t"cache_size_bytes": 5,');
    assertEquals(JSON.parse(text), [{ cache_size_bytes: 5, dst_path: "a" }, {
      cache_size_bytes: 3,
      dst_path: "b",
    }]);
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: a partial restore reports cache_state=partial", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "a"), { "1.txt": "1" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "a", PLUGIN_CACHE_KEY: "k" }), 0);
    await Deno.remove(join(sb.work, "a"), { recursive: true });
    const out = join(sb.dir, "out.env");
    assertEquals(
      await sb.cli({ PLUGIN_RESTORE: "true", PLUGIN_MOUNT: "a,b", PLUGIN_CACHE_KEY: "k", DRONE_OUTPUT: out }),
      0,
    );
    assertEquals((await Deno.readTextFile(out)).trim().split("\n").sort(), [
      "cache_hit=false",
      "cache_key_matched=k",
      "cache_state=partial",
    ]);
    assertEquals(await Deno.readTextFile(join(sb.work, "a/1.txt")), "1");
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: listing restore (no mounts) restores every mount under the key, strictly", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "one"), { "x.txt": "one" });
    await writeTree(join(sb.work, "two/sub"), { "y.txt": "two" });
    assertEquals(
      await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "one,two/sub", PLUGIN_CACHE_KEY: "abc" }),
      0,
    );
    await writeTree(join(sb.work, "other"), { "z.txt": "other" });
    assertEquals(
      await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "other", PLUGIN_CACHE_KEY: "abc1" }),
      0,
    );
    for (const d of ["one", "two", "other"]) await Deno.remove(join(sb.work, d), { recursive: true });
    assertEquals(await sb.cli({ PLUGIN_RESTORE: "true", PLUGIN_CACHE_KEY: "abc" }), 0);
    assertEquals(await Deno.readTextFile(join(sb.work, "one/x.txt")), "one");
    assertEquals(await Deno.readTextFile(join(sb.work, "two/sub/y.txt")), "two");
    assert(!(await exists(join(sb.work, "other"))), "key abc must not restore abc1/…");
    assertEquals(
      await sb.cli({ PLUGIN_RESTORE: "true", PLUGIN_CACHE_KEY: "abc", PLUGIN_STRICT_KEY_MATCHING: "false" }),
      0,
    );
    assertEquals(
      await Deno.readTextFile(join(sb.work, "other/z.txt")),
      "other",
      "non-strict takes the prefix",
    );
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: restore keys pick the newest cache under the first matching prefix", async () => {
  const sb = await sandbox();
  try {
    const save = async (key: string, text: string, ageSeconds: number) => {
      await writeTree(join(sb.work, "deps"), { "v.txt": text });
      assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "deps", PLUGIN_CACHE_KEY: key }), 0);
      const t = new Date(Date.now() - ageSeconds * 1000);
      await Deno.utime(join(sb.cache, key, "deps"), t, t);
    };
    await save("npm-main-old", "old", 300);
    await save("npm-main-new", "new", 100);
    await save("npm-feature-x", "feature", 10);
    await save("other-newest", "other", 0);
    await Deno.remove(join(sb.work, "deps"), { recursive: true });
    const out = join(sb.dir, "out.env");
    const env = {
      PLUGIN_RESTORE: "true",
      PLUGIN_MOUNT: "deps",
      PLUGIN_CACHE_KEY: "npm-main-missing",
      PLUGIN_RESTORE_KEYS: "npm-main-\nnpm-",
      DRONE_OUTPUT: out,
    };
    assertEquals(await sb.cli(env), 0);
    assertEquals(await Deno.readTextFile(join(sb.work, "deps/v.txt")), "new");
    assertEquals((await Deno.readTextFile(out)).trim().split("\n").sort(), [
      "cache_hit=false",
      "cache_key_matched=npm-main-new",
      "cache_state=complete",
    ]);
    assertEquals(await sb.cli({ ...env, PLUGIN_RESTORE_KEYS: "nope-,npm-" }), 0);
    assertEquals(
      await Deno.readTextFile(join(sb.work, "deps/v.txt")),
      "feature",
      "second prefix, newest wins",
    );
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: a corrupt cache is a failure and leaves nothing behind", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "deps"), { "big.txt": "x".repeat(200_000), "small.txt": "s" });
    const env = { PLUGIN_MOUNT: "deps", PLUGIN_CACHE_KEY: "k" };
    assertEquals(await sb.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
    const object = join(sb.cache, "k/deps");
    const bytes = await Deno.readFile(object);
    bytes[100_000] ^= 0xff; // inside big.txt's data
    await Deno.writeFile(object, bytes);
    await Deno.remove(join(sb.work, "deps"), { recursive: true });
    const out = join(sb.dir, "out.env");
    assertEquals(await sb.cli({ ...env, PLUGIN_RESTORE: "true", DRONE_OUTPUT: out }), 0);
    const lines = (await Deno.readTextFile(out)).trim().split("\n");
    assertEquals(lines[0], "cache_hit=false");
    assertMatch(lines[1], /^cache_state=(miss|failed)$/);
    assertEquals(lines[2], "cache_key_matched=");
    assert(sb.logs.some((l) => /corrupt/i.test(l)), "reported as corrupt");
    assertEquals([...Deno.readDirSync(sb.work)].map((e) => e.name), [], "nothing left in the workspace");
    assertEquals(await sb.cli({ ...env, PLUGIN_RESTORE: "true", PLUGIN_EXIT_CODE: "true" }), 1);
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: a moved workspace restores under the new mount path", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "node_modules"), NODE_MODULES);
    const env = { PLUGIN_MOUNT: "node_modules", PLUGIN_CACHE_KEY: "k", PLUGIN_ARCHIVE_FORMAT: "zstd" };
    assertEquals(await sb.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
    const moved = join(sb.dir, "elsewhere");
    await Deno.mkdir(moved);
    assertEquals(await sb.cli({ ...env, PLUGIN_RESTORE: "true" }, [], moved), 0);
    assertEquals(await readTree(join(moved, "node_modules")), NODE_MODULES);
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: flush deletes under the key, honours older-than and dry run", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "m"), { "f": "1" });
    for (const key of ["k", "k2"]) {
      assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_CACHE_KEY: key }), 0);
    }
    const old = new Date(Date.now() - 3 * 86400_000);
    await Deno.utime(join(sb.cache, "k2/m"), old, old);
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k", PLUGIN_DRY_RUN: "true" }, ["flush"]), 0);
    assert(await exists(join(sb.cache, "k/m")), "dry run deletes nothing");
    assert(sb.logs.some((l) => l.includes("would delete") && l.includes("k/m")));
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k" }, ["flush"]), 0);
    assert(!(await exists(join(sb.cache, "k/m"))), "flushed");
    assert(await exists(join(sb.cache, "k2/m")), "other keys untouched");
    await writeTree(join(sb.work, "m"), { "f": "2" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_CACHE_KEY: "k3" }), 0);
    assertEquals(
      await sb.cli({ PLUGIN_FLUSH: "true", PLUGIN_FLUSH_PREFIX: "k", PLUGIN_FLUSH_OLDER_THAN: "48h" }),
      0,
    );
    assert(!(await exists(join(sb.cache, "k2/m"))), "older than 48h: flushed");
    assert(await exists(join(sb.cache, "k3/m")), "newer: kept");
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: settings errors exit 1 and name the setting", async () => {
  const sb = await sandbox();
  try {
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_RESTORE: "true", PLUGIN_MOUNT: "x" }), 1);
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "x", PLUGIN_OVERRIDE: "maybe" }), 1);
    assert(sb.logs.some((l) => l.includes("PLUGIN_OVERRIDE")));
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "../escape" }), 1);
    assert(sb.logs.some((l) => l.includes("../escape")));
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true" }), 1, "save without mounts");
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "x", PLUGIN_BACKEND: "sftp" }), 1);
    assert(sb.logs.some((l) => l.includes("SFTP_CACHE_ROOT is not set")));
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: a missing cache volume fails the step with a hint", async () => {
  const sb = await sandbox();
  try {
    const code = await sb.cli({
      PLUGIN_REBUILD: "true",
      PLUGIN_MOUNT: "x",
      PLUGIN_FILESYSTEM_CACHE_ROOT: "/no/such/vol",
    });
    assertEquals(code, 1);
    assert(sb.logs.some((l) => l.includes("mounted")));
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: secrets never reach the log, also with debug", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "m"), { "f": "1" });
    const secrets = {
      PLUGIN_SECRET_KEY: "aws-secret-value-123",
      PLUGIN_ACCOUNT_KEY: "azure-account-key-456",
      PLUGIN_OIDC_TOKEN_ID: "eyJhbGciOi.oidc-token-789",
      PLUGIN_JSON_KEY: '{"private_key":"gcs-private-000"}',
    };
    assertEquals(
      await sb.cli({ ...secrets, PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_DEBUG: "true" }),
      0,
    );
    assert(sb.logs.some((l) => l.includes("level=debug")), "debug lines were written");
    const all = sb.logs.join("\n");
    for (const value of Object.values(secrets)) assert(!all.includes(value), `secret leaked: ${value}`);
    assertStringIncludes(all, "***");
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: JSON log format writes one JSON object per line", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "m"), { "f": "1" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_LOG_FORMAT: "json" }), 0);
    for (const line of sb.logs) {
      const rec = JSON.parse(line);
      assertMatch(rec.level, /^(info|warn|error|debug)$/);
      assert(typeof rec.msg === "string");
    }
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: --help lists settings, --version prints the version", async () => {
  const sb = await sandbox();
  try {
    assertEquals(await sb.cli({}, ["--help"]), 0);
    assertStringIncludes(sb.logs.join("\n"), "--cache-key");
    assertEquals(await sb.cli({}, ["--version"]), 0);
    assertMatch(
      sb.logs.at(-1)!,
      /^ci-cache \d+\.\d+\.\d+ \(deno \d+\.\d+\.\d+, commit ([0-9a-f]{40}|unknown)\)$/,
    );
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: ~ and $VAR mounts expand as the Go plugin's, objects named after the expanded path", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.dir, ".cache/tool"), { "c.bin": "cached" });
    const env = { PLUGIN_MOUNT: "~/.cache/$TOOL", PLUGIN_CACHE_KEY: "k", TOOL: "tool" };
    assertEquals(await sb.cli({ ...env, PLUGIN_REBUILD: "true" }), 0);
    assert(
      await exists(join(sb.cache, "k", sb.dir.slice(1), ".cache/tool")),
      "k/<home without />/.cache/tool",
    );
    await Deno.remove(join(sb.dir, ".cache"), { recursive: true });
    assertEquals(await sb.cli({ ...env, PLUGIN_RESTORE: "true" }), 0);
    assertEquals(await Deno.readTextFile(join(sb.dir, ".cache/tool/c.bin")), "cached");
  } finally {
    await sb.cleanup();
  }
});

Deno.test("cli: listing restore with the key separator lists under <key>/ only", async () => {
  const sb = await sandbox();
  try {
    await writeTree(join(sb.work, "m"), { "f.txt": "exact" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_CACHE_KEY: "key" }), 0);
    await writeTree(join(sb.work, "n"), { "g.txt": "longer key" });
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "n", PLUGIN_CACHE_KEY: "key-old" }), 0);
    for (const d of ["m", "n"]) await Deno.remove(join(sb.work, d), { recursive: true });
    const env = {
      PLUGIN_RESTORE: "true",
      PLUGIN_CACHE_KEY: "key",
      PLUGIN_ENABLE_SEPARATOR: "true",
      PLUGIN_STRICT_KEY_MATCHING: "false",
    };
    assertEquals(await sb.cli(env), 0);
    assertEquals(await Deno.readTextFile(join(sb.work, "m/f.txt")), "exact");
    assert(
      !(await exists(join(sb.work, "n"))),
      "the separator keeps key-old/… out even without strict matching",
    );
  } finally {
    await sb.cleanup();
  }
});
