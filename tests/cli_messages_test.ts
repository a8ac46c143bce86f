/**
 * Through the CLI (`run(args, env)`): every flag does what it says and every
 * message tells the truth and the next step (issue 17). Booleans, typos,
 * empty template fields, restore outcomes and step outputs, an unreachable
 * store, half an S3 key pair, terminal output, sizes, and errors that name
 * what the user typed.
 */
import { join } from "node:path";
import { assert, assertEquals, assertMatch, assertNotEquals, assertStringIncludes } from "./assert.ts";
import { exists, type Sandbox, sandbox, writeTree } from "./support.ts";
import { SETTING_SPECS, UNAVAILABLE_BACKENDS } from "../lib/settings.ts";

/** Runs `fn` with a fresh sandbox and removes it afterwards. */
function withSandbox(fn: (sb: Sandbox) => Promise<void>): () => Promise<void> {
  return async () => {
    const sb = await sandbox();
    try {
      await fn(sb);
    } finally {
      await sb.cleanup();
    }
  };
}

const lineWith = (sb: Sandbox, text: string) => sb.logs.find((l) => l.includes(text));

// ── booleans ──────────────────────────────────────────────────────────────

Deno.test(
  "cli messages: --override false is a boolean, never a mount; =false and --no-override too",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "node_modules"), { "v.txt": "one" });
    const key = ["--cache-key", "k"];
    assertEquals(await sb.cli({}, ["save", ...key, "node_modules"]), 0);
    const first = await Deno.readFile(join(sb.cache, "k/node_modules"));
    await writeTree(join(sb.work, "node_modules"), { "v.txt": "two, longer" });
    for (
      const flags of [["--override", "false"], ["--override=false"], ["--no-override"], ["--override", "0"], [
        "--override",
        "False",
      ]]
    ) {
      sb.logs.length = 0;
      assertEquals(await sb.cli({}, ["save", ...flags, ...key, "node_modules"]), 0, flags.join(" "));
      assertEquals(await Deno.readFile(join(sb.cache, "k/node_modules")), first, `${flags}: not overwritten`);
      assert(lineWith(sb, "status=skipped"), `${flags}: skipped`);
      assert(!sb.logs.some((l) => l.includes("mount false") || l.includes("false:")), "false is no mount");
    }
    // `--override true` consumes its value too, and overwrites.
    assertEquals(await sb.cli({}, ["save", "--override", "true", ...key, "node_modules"]), 0);
    assertNotEquals(await Deno.readFile(join(sb.cache, "k/node_modules")), first);
    // A bare boolean anywhere else is an error that says how to write it.
    sb.logs.length = 0;
    assertEquals(await sb.cli({}, ["save", ...key, "node_modules", "false"]), 1);
    const err = lineWith(sb, "invalid settings");
    assert(err, sb.logs.join("\n"));
    assertStringIncludes(err, "is not a mount");
    assert(!(await exists(join(sb.cache, "k/false"))), "no object for a mount named false");
  }),
);

Deno.test(
  "cli messages: --help explains boolean flags, lists enum values and marks unavailable backends",
  withSandbox(async (sb) => {
    assertEquals(await sb.cli({}, ["--help"]), 0);
    const help = sb.logs.join("\n");
    assertStringIncludes(help, "--override[=true|false]");
    assertStringIncludes(help, "--no-override");
    assertStringIncludes(help, "--override false");
    assertStringIncludes(help, "accepted: tar, gzip, zstd");
    assertStringIncludes(help, "accepted: error, warn, info, debug");
    assertStringIncludes(help, "accepted: logfmt, json");
    assertStringIncludes(help, "accepted: AES256, aws:kms, aws:kms:dsse");
    for (const b of UNAVAILABLE_BACKENDS) assertStringIncludes(help, `${b} (not available yet)`);
    for (const b of ["filesystem", "s3", "gcs", "azure", "sftp", "harness"]) {
      if (!UNAVAILABLE_BACKENDS.includes(b)) assert(!help.includes(`${b} (not available yet)`), b);
    }
    for (const spec of SETTING_SPECS.filter((x) => x.choices)) {
      const block = help.slice(help.indexOf(`  --${spec.flag} <value>`)).split("\n").slice(0, 4).join("\n");
      for (const choice of spec.choices!.filter((c) => c !== "")) {
        assertStringIncludes(block, choice, `--help lists ${choice} for --${spec.flag}`);
      }
    }
    assertMatch(help, /accepted: s3, gcs, azure, filesystem/);
  }),
);

// ── typos ────────────────────────────────────────────────────────────────

Deno.test(
  "cli messages: unknown PLUGIN_* variables warn once each with the closest setting",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "m"), { "f.txt": "x" });
    const env = {
      PLUGIN_REBUILD: "true",
      PLUGIN_MOUNT: "m",
      PLUGIN_CACHEKEY: "abc",
      PLUGIN_ARCHIVE_FROMAT: "zstd",
      PLUGIN_ROLE_ARN: "arn:aws:iam::1:role/x", // the Go plugin's stale README name
      PLUGIN_TOTALLY_UNRELATED_THING: "1",
      PLUGIN_ARTIFACT_FILE: "/tmp/artifact", // set by Harness: known, no warning
    };
    assertEquals(await sb.cli(env), 0);
    const warnings = sb.logs.filter((l) =>
      l.startsWith("level=warn") && l.includes("is not a ci-cache setting")
    );
    assertEquals(warnings.length, 4, warnings.join("\n"));
    assertStringIncludes(lineWith(sb, "PLUGIN_CACHEKEY")!, "did you mean PLUGIN_CACHE_KEY?");
    assertStringIncludes(lineWith(sb, "PLUGIN_ARCHIVE_FROMAT")!, "did you mean PLUGIN_ARCHIVE_FORMAT?");
    assertStringIncludes(lineWith(sb, "PLUGIN_ROLE_ARN")!, "did you mean PLUGIN_ASSUME_ROLE_ARN?");
    assertStringIncludes(lineWith(sb, "PLUGIN_TOTALLY_UNRELATED_THING")!, "--help");
    assert(!lineWith(sb, "PLUGIN_ARTIFACT_FILE"), "known-but-unused variables do not warn");
    for (
      const known of ["PLUGIN_REBUILD", "PLUGIN_MOUNT", "PLUGIN_BACKEND", "PLUGIN_FILESYSTEM_CACHE_ROOT"]
    ) {
      assert(!sb.logs.some((l) => l.includes(`${known} is not`)), `${known} is a setting`);
    }
    // The warning also comes when the typo leaves no mode (a warning and exit 0, as the Go plugin).
    sb.logs.length = 0;
    assertEquals(await sb.cli({ PLUGIN_REBUIDL: "true", PLUGIN_MOUNT: "m" }), 0);
    assertStringIncludes(lineWith(sb, "PLUGIN_REBUIDL")!, "did you mean PLUGIN_REBUILD?");
  }),
);

Deno.test(
  "cli messages: --cache_key suggests --cache-key; `ci-cache sav` is an unknown command",
  withSandbox(async (sb) => {
    assertEquals(await sb.cli({}, ["save", "--cache_key", "k", "m"]), 1);
    assertStringIncludes(lineWith(sb, "--cache_key")!, "did you mean --cache-key?");
    assertEquals(await sb.cli({}, ["save", "--archive-fromat", "zstd", "m"]), 1);
    assertStringIncludes(lineWith(sb, "--archive-fromat")!, "did you mean --archive-format?");
    sb.logs.length = 0;
    assertEquals(await sb.cli({}, ["sav", "node_modules"]), 1);
    const err = lineWith(sb, "invalid settings")!;
    assertStringIncludes(err, "unknown command sav");
    assertStringIncludes(err, "did you mean save?");
    assert(!err.includes("no mode selected"), err);
  }),
);

Deno.test(
  "cli messages: enumerations are case-insensitive; a wrong one names the flag and suggests",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "m"), { "f.txt": "x" });
    assertEquals(await sb.cli({}, ["save", "--backend", "FILESYSTEM", "--archive-format", "ZSTD", "m"]), 0);
    assert(lineWith(sb, "status=saved"), sb.logs.join("\n"));
    sb.logs.length = 0;
    // S3 is accepted as s3: what fails next is the missing bucket, not the backend name.
    assertEquals(await sb.cli({}, ["save", "--backend", "S3", "m"]), 1);
    assert(
      !sb.logs.some((l) => l.includes("is not a backend") || l.includes("is not valid")),
      sb.logs.join("\n"),
    );
    assertStringIncludes(sb.logs.join("\n"), "no bucket: set --bucket (PLUGIN_BUCKET)");
    sb.logs.length = 0;
    // A container that was given by flag is named by its flag.
    assertEquals(
      await sb.cli({}, [
        "save",
        "--backend",
        "azure",
        "--azure-container-name",
        "X",
        "--cache-key",
        "k",
        "m",
      ]),
      1,
    );
    assertStringIncludes(sb.logs.join("\n"), "from --azure-container-name");
    sb.logs.length = 0;
    assertEquals(await sb.cli({}, ["save", "--backend", "s4", "m"]), 1);
    const err = lineWith(sb, "invalid settings")!;
    assertStringIncludes(err, "--backend=");
    assertStringIncludes(err, "did you mean s3?");
  }),
);

// ── templates and mounts ─────────────────────────────────────────────────

Deno.test(
  "cli messages: a template field that renders empty warns; set, it does not",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "m"), { "f.txt": "x" });
    const env = { PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_CACHE_KEY: "npm-{{ .Repo.Name }}" };
    assertEquals(await sb.cli(env), 0);
    const warn = lineWith(sb, ".Repo.Name, which is empty");
    assert(warn?.startsWith("level=warn"), sb.logs.join("\n"));
    assert(warn);
    assertStringIncludes(warn, "key=npm-");
    sb.logs.length = 0;
    assertEquals(await sb.cli({ ...env, DRONE_REPO_NAME: "app" }), 0);
    assert(!lineWith(sb, "which is empty"), "no warning when the field is set");
    assert(await exists(join(sb.cache, "npm-app/m")));
  }),
);

Deno.test(
  "cli messages: a mount with an unset $VARIABLE warns that it expands to nothing",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, ".m2"), { "f.txt": "x" });
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k" }, ["save", "$NOPE_UNSET/.m2"]), 0);
    const warn = lineWith(sb, "$NOPE_UNSET");
    assert(warn?.startsWith("level=warn"), sb.logs.join("\n"));
    assert(warn);
    assertStringIncludes(warn, "unset");
    assertStringIncludes(warn, "variable=NOPE_UNSET");
    sb.logs.length = 0;
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k", SET_DIR: "." }, ["save", "$SET_DIR/.m2"]), 0);
    assert(!lineWith(sb, "unset"), "a set variable does not warn");
  }),
);

Deno.test(
  "cli messages: a template syntax error's caret gets its own lines on a terminal, one line otherwise",
  withSandbox(async (sb) => {
    const bad = { PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "m", PLUGIN_CACHE_KEY: "npm-{{ .Repo.Name }" };
    assertEquals(await sb.cli(bad), 1);
    const plain = lineWith(sb, "invalid settings")!;
    assertStringIncludes(plain, "\\n", "not a terminal: the excerpt stays in the one structured line");
    sb.logs.length = 0;
    const tty: string[] = [];
    assertEquals(await sb.cli(bad, [], undefined, { terminal: true, tty: (t) => tty.push(t) }), 1);
    const structured = lineWith(sb, "invalid settings")!;
    assert(!structured.includes("\\n"), `structured line without the excerpt: ${structured}`);
    assertStringIncludes(structured, "PLUGIN_CACHE_KEY");
    const raw = tty.join("");
    const lines = raw.split("\n").map((l) => l.replaceAll("\r\x1b[K", ""));
    const templateLine = lines.findIndex((l) => l.includes("npm-{{ .Repo.Name }"));
    assert(templateLine >= 0, raw);
    assertMatch(lines[templateLine + 1], /^\s+\^$/, "the caret on the next line");
    const column = lines[templateLine + 1].indexOf("^") - lines[templateLine].indexOf("npm");
    const template = "npm-{{ .Repo.Name }";
    assert(column > template.indexOf("{{") && column <= template.length, `caret inside the action: ${raw}`);
  }),
);

// ── outcomes and step outputs ────────────────────────────────────────────

async function outputs(file: string): Promise<Record<string, string>> {
  const text = await Deno.readTextFile(file).catch(() => "");
  return Object.fromEntries(
    text.trim().split("\n").filter((l) => l).map((l) => {
      const i = l.indexOf("=");
      return [l.slice(0, i), l.slice(i + 1)];
    }),
  );
}

Deno.test(
  "cli messages: step outputs are always complete, on Drone and GitHub Actions (hit, miss, partial)",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "a"), { "1.txt": "1" });
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k" }, ["save", "a"]), 0);
    const run = async (mounts: string[], key = "k") => {
      const drone = join(sb.dir, `drone-${crypto.randomUUID()}`);
      const github = join(sb.dir, `github-${crypto.randomUUID()}`);
      const code = await sb.cli(
        { PLUGIN_CACHE_KEY: key, DRONE_OUTPUT: drone, GITHUB_OUTPUT: github, GITHUB_ACTIONS: "true" },
        ["restore", ...mounts],
      );
      return { code, drone: await outputs(drone), github: await outputs(github) };
    };
    const hit = await run(["a"]);
    assertEquals(hit.drone, { cache_hit: "true", cache_state: "complete", cache_key_matched: "k" });
    assertEquals(hit.github, {
      "cache-hit": "true",
      "cache-state": "complete",
      "cache-primary-key": "k",
      "cache-matched-key": "k",
    });
    const miss = await run(["a"], "nothing");
    assertEquals(miss.code, 0);
    assertEquals(miss.drone, { cache_hit: "false", cache_state: "miss", cache_key_matched: "" });
    assertEquals(miss.github["cache-state"], "miss");
    assertEquals(miss.github["cache-matched-key"], "");
    const partial = await run(["a", "b"]);
    assertEquals(partial.drone, { cache_hit: "false", cache_state: "partial", cache_key_matched: "k" });
  }),
);

Deno.test(
  "cli messages: a restore that fails says 'restore failed' and why; a miss says 'cache miss' at warn",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "sub/deps"), { "f.txt": "x" });
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k" }, ["save", "sub/deps"]), 0);
    await Deno.remove(join(sb.work, "sub"), { recursive: true });
    await Deno.writeTextFile(join(sb.work, "sub"), "a file where the mount's parent directory should be");
    const out = join(sb.dir, "out.env");
    sb.logs.length = 0;
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "k", DRONE_OUTPUT: out }, ["restore", "sub/deps"]), 0);
    const failed = lineWith(sb, "[IMPORTANT] restore cache");
    assert(failed, sb.logs.join("\n"));
    assert(failed.startsWith("level=error"), failed);
    assertStringIncludes(failed, "restore cache failed for 1 of 1 mounts: sub/deps: ");
    assert(!failed.includes("cache miss"), `a failure is not a miss: ${failed}`);
    assertEquals(await outputs(out), { cache_hit: "false", cache_state: "failed", cache_key_matched: "" });
    assertEquals(
      await Deno.readTextFile(join(sb.work, "sub")),
      "a file where the mount's parent directory should be",
    );
    assertEquals(
      await sb.cli({ PLUGIN_CACHE_KEY: "k", PLUGIN_EXIT_CODE: "true" }, ["restore", "sub/deps"]),
      1,
      "exit_code makes a failure fail the step",
    );
    sb.logs.length = 0;
    assertEquals(await sb.cli({ PLUGIN_CACHE_KEY: "first-build" }, ["restore", "sub/deps"]), 0);
    const miss = lineWith(sb, "[IMPORTANT] restore cache")!;
    assert(miss.startsWith("level=warn"), miss);
    assertStringIncludes(miss, "cache miss for key first-build");
  }),
);

// ── an unreachable store ─────────────────────────────────────────────────

/** A 127.0.0.1 port with nothing listening (bound, then closed). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

const AZURITE_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

function unreachable(backend: string, port: number): Record<string, string> {
  const endpoint = `http://127.0.0.1:${port}`;
  const common = {
    PLUGIN_BACKEND: backend,
    PLUGIN_CACHE_KEY: "k",
    PLUGIN_MOUNT: "m",
    PLUGIN_BACKEND_OPERATION_TIMEOUT: "2s",
    AZURE_BLOB_MAX_RETRY_REQUESTS: "1",
  };
  switch (backend) {
    case "s3":
      return {
        ...common,
        PLUGIN_BUCKET: "b",
        PLUGIN_ENDPOINT: endpoint,
        PLUGIN_PATH_STYLE: "true",
        PLUGIN_REGION: "us-east-1",
        PLUGIN_ACCESS_KEY: "AKIAEXAMPLE",
        PLUGIN_SECRET_KEY: "not-a-real-secret",
      };
    case "gcs":
      return { ...common, PLUGIN_BUCKET: "b", PLUGIN_ENDPOINT: endpoint, PLUGIN_API_KEY: "not-a-real-key" };
    default:
      return {
        ...common,
        PLUGIN_ENDPOINT: `${endpoint}/devstoreaccount1`,
        PLUGIN_ACCOUNT_NAME: "devstoreaccount1",
        PLUGIN_ACCOUNT_KEY: AZURITE_KEY,
        PLUGIN_CONTAINER: "cache",
      };
  }
}

for (const backend of ["s3", "gcs", "azure"]) {
  Deno.test({
    name:
      `cli messages: an unreachable ${backend} store is a cache failure (exit 0, [IMPORTANT]; 1 with exit_code)`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: withSandbox(async (sb) => {
      await writeTree(join(sb.work, "m"), { "f.txt": "x" });
      const env = unreachable(backend, closedPort());
      const out = join(sb.dir, "out.env");
      assertEquals(
        await sb.cli({ ...env, PLUGIN_RESTORE: "true", DRONE_OUTPUT: out }),
        0,
        sb.logs.join("\n"),
      );
      const important = lineWith(sb, "[IMPORTANT] restore cache failed");
      assert(important, sb.logs.join("\n"));
      assertStringIncludes(important, "kind=Unavailable");
      assertEquals((await outputs(out)).cache_state, "failed");
      assertEquals(await sb.cli({ ...env, PLUGIN_REBUILD: "true" }), 0, "save: the build goes on");
      assertEquals(await sb.cli({ ...env, PLUGIN_REBUILD: "true", PLUGIN_EXIT_CODE: "true" }), 1);
      assert(!sb.logs.join("\n").includes("not-a-real-"), "no secret in the log");
    }),
  });
}

Deno.test(
  "cli messages: wrong settings still fail the step (exit 1), naming the flag or the variable used",
  withSandbox(async (sb) => {
    assertEquals(await sb.cli({}, ["save", "--filesystem-cache-root", "/no/such/volume", "m"]), 1);
    const byFlag = lineWith(sb, "/no/such/volume")!;
    assertStringIncludes(byFlag, "--filesystem-cache-root");
    assert(!byFlag.includes("PLUGIN_FILESYSTEM_CACHE_ROOT"), byFlag);
    sb.logs.length = 0;
    assertEquals(
      await sb.cli({
        PLUGIN_FILESYSTEM_CACHE_ROOT: "/no/such/volume",
        PLUGIN_REBUILD: "true",
        PLUGIN_MOUNT: "m",
      }),
      1,
    );
    assertStringIncludes(lineWith(sb, "/no/such/volume")!, "PLUGIN_FILESYSTEM_CACHE_ROOT");
    sb.logs.length = 0;
    assertEquals(await sb.cli({}, ["save", "--compression-level", "99", "--archive-format", "gzip", "m"]), 1);
    assertStringIncludes(lineWith(sb, "invalid settings")!, "--compression-level=99");
  }),
);

Deno.test(
  "cli messages: settings errors honour PLUGIN_LOG_FORMAT=json; two modes are 'both' true",
  withSandbox(async (sb) => {
    assertEquals(
      await sb.cli({ PLUGIN_LOG_FORMAT: "json", PLUGIN_REBUILD: "true", PLUGIN_RESTORE: "true" }),
      1,
    );
    assertEquals(sb.logs.length, 1, sb.logs.join("\n"));
    const rec = JSON.parse(sb.logs[0]);
    assertEquals([rec.level, rec.msg], ["error", "invalid settings"]);
    assertStringIncludes(rec.error, "PLUGIN_REBUILD and PLUGIN_RESTORE are both true");
    sb.logs.length = 0;
    assertEquals(await sb.cli({}, ["save", "--log-format", "json", "--override=maybe", "m"]), 1);
    assertStringIncludes(JSON.parse(sb.logs[0]).error, "--override");
    sb.logs.length = 0;
    assertEquals(await sb.cli({ PLUGIN_REBUILD: "true", PLUGIN_RESTORE: "true", PLUGIN_FLUSH: "true" }), 1);
    assertStringIncludes(sb.logs[0], "PLUGIN_REBUILD, PLUGIN_RESTORE and PLUGIN_FLUSH are all true");
  }),
);

Deno.test(
  "cli messages: flush --flush-prefix logs the prefix, not an unrelated key",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "m"), { "f.txt": "x" });
    assertEquals(await sb.cli({}, ["save", "--cache-key", "npm-1", "m"]), 0);
    sb.logs.length = 0;
    assertEquals(await sb.cli({}, ["flush", "--flush-prefix", "npm-"]), 0);
    const started = lineWith(sb, 'msg="flush started"')!;
    assertStringIncludes(started, "prefix=npm-");
    assert(!/\bkey=/.test(sb.logs.join("\n")), `no key in a prefix flush: ${sb.logs.join("\n")}`);
    assert(!(await exists(join(sb.cache, "npm-1/m"))), "flushed");
  }),
);

// ── sizes and rates ──────────────────────────────────────────────────────

Deno.test(
  "cli messages: sizes read raw → stored, rates in MiB/s, JSON carries byte counts, ratio has 2 digits",
  withSandbox(async (sb) => {
    await writeTree(join(sb.work, "m"), { "big.txt": "a".repeat(300_000), "b.txt": "b".repeat(1000) });
    assertEquals(await sb.cli({ PLUGIN_ARCHIVE_FORMAT: "zstd", PLUGIN_CACHE_KEY: "k" }, ["save", "m"]), 0);
    const summary = lineWith(sb, 'msg="save done"')!;
    assertMatch(summary, /m: saved \d+\.\d KiB → \d+(\.\d)? (B|KiB) stored/);
    const mount = lineWith(sb, "status=saved")!;
    assertMatch(mount, /mib_per_s=\d/);
    assert(!mount.includes("mb_per_s"), mount);
    const ratio = Number(/ratio=([\d.e+]+)/.exec(mount)![1]);
    assert(ratio > 10, `zstd on repeated bytes compresses well: ${mount}`);
    assertEquals(
      String(ratio).replace(/^0\.0*|\./g, "").replace(/0+$/, "").length <= 2,
      true,
      `2 digits: ${ratio}`,
    );
    sb.logs.length = 0;
    assertEquals(
      await sb.cli({ PLUGIN_ARCHIVE_FORMAT: "zstd", PLUGIN_CACHE_KEY: "k", PLUGIN_LOG_FORMAT: "json" }, [
        "save",
        "m",
      ]),
      0,
    );
    const rec = sb.logs.map((l) => JSON.parse(l)).find((r) => r.status === "saved");
    assertEquals(rec.size_bytes, 301_000, "the files' bytes");
    assert(Number.isInteger(rec.stored_bytes) && rec.stored_bytes > 0 && rec.stored_bytes < rec.size_bytes);
    assertEquals(
      rec.stored_bytes,
      (await Deno.stat(join(sb.cache, "k/m"))).size,
      "stored bytes are the object's",
    );
  }),
);

// ── S3: half a key pair ──────────────────────────────────────────────────

Deno.test(
  "cli messages: an S3 access key without its secret says which half is missing (exit 1)",
  withSandbox(async (sb) => {
    const env = { PLUGIN_BACKEND: "s3", PLUGIN_BUCKET: "b", PLUGIN_MOUNT: "m", PLUGIN_REBUILD: "true" };
    assertEquals(await sb.cli({ ...env, PLUGIN_ACCESS_KEY: "AKIAEXAMPLE" }), 1);
    const err = lineWith(sb, "secret key is not")!;
    assertStringIncludes(err, "PLUGIN_ACCESS_KEY");
    assertStringIncludes(err, "PLUGIN_SECRET_KEY");
    assert(!err.includes("no access key, secret key or role"), err);
    sb.logs.length = 0;
    assertEquals(await sb.cli({ ...env, PLUGIN_SECRET_KEY: "only-the-secret" }), 1);
    assertStringIncludes(lineWith(sb, "access key is not")!, "PLUGIN_ACCESS_KEY");
    assert(!sb.logs.join("\n").includes("only-the-secret"), "the secret is never logged");
  }),
);
