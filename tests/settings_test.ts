import { assert, assertEquals, assertStringIncludes, assertThrows } from "./assert.ts";
import {
  closest,
  helpText,
  KNOWN_UNUSED_ENV,
  loadSettings,
  parseDuration,
  secretValues,
  SETTING_SPECS,
  type Settings,
  SettingsError,
  unknownEnvWarnings,
} from "../lib/settings.ts";
import { VERSION } from "../lib/version.ts";

function load(args: string[], env: Record<string, string> = {}): Settings {
  const r = loadSettings(args, env);
  if (r.kind !== "run") throw new Error(`expected run, got ${r.kind}`);
  return r.settings;
}

Deno.test("settings: Go plugin defaults", () => {
  const s = load(["save"]);
  assertEquals(s.logLevel, "info");
  assertEquals(s.logFormat, "logfmt");
  assertEquals(s.archiveFormat, "tar");
  assertEquals(s.compressionLevel, -1);
  assertEquals(s.override, true);
  assertEquals(s.strictKeyMatching, true);
  assertEquals(s.commitBranch, "master");
  assertEquals(s.commitRef, "refs/heads/master");
  assertEquals(s.buildEvent, "push");
  assertEquals(s.buildStatus, "success");
  assertEquals(s.filesystemCacheRoot, "/tmp/cache");
  assertEquals(s.backendOperationTimeout, 180_000);
  assertEquals(s.assumeRoleSessionName, "drone-cache");
  assertEquals(s.azureBlobStorageUrl, "blob.core.windows.net");
  assertEquals(s.azureBlobMaxRetryRequests, 4);
  assertEquals(s.multipartChunkSizeMb, 512);
  assertEquals(s.multipartMaxUploadSizeMb, 51200);
  assertEquals(s.multipartThresholdSizeMb, 5120);
  assertEquals(s.mount, []);
});

Deno.test("settings: env var priority, first non-empty wins", () => {
  assertEquals(load(["save"], { PLUGIN_LOG_LEVEL: "warn", LOG_LEVEL: "debug" }).logLevel, "warn");
  assertEquals(load(["save"], { LOG_LEVEL: "debug" }).logLevel, "debug");
  // Deliberate difference: an empty variable counts as unset (the Go plugin panics on PLUGIN_LOG_LEVEL="").
  assertEquals(load(["save"], { PLUGIN_LOG_LEVEL: "", LOG_LEVEL: "error" }).logLevel, "error");
  assertEquals(load(["save"], { PLUGIN_OVERRIDE: "" }).override, true);
  assertEquals(
    load(["save"], { AWS_ASSUME_ROLE_ARN: "arn:c", PLUGIN_ASSUME_ROLE: "arn:b" }).assumeRoleArn,
    "arn:b",
  );
  assertEquals(load(["save"], { TENANT_ID: "t3", AZURE_TENANT_ID: "t2" }).azureTenantId, "t2");
});

Deno.test("settings: flags win over env, Go dotted aliases work", () => {
  const s = load(["save", "--log-level=debug", "--archive-format", "zstd", "--log.format=json"], {
    PLUGIN_LOG_LEVEL: "error",
    PLUGIN_ARCHIVE_FORMAT: "gzip",
  });
  assertEquals(s.logLevel, "debug");
  assertEquals(s.archiveFormat, "zstd");
  assertEquals(s.logFormat, "json");
  assertEquals(s.source.logLevel, "--log-level");
});

Deno.test("settings: bool spellings of Go's ParseBool, --no-x and --x=false", () => {
  for (const t of ["1", "t", "T", "TRUE", "true", "True"]) {
    assertEquals(load(["save"], { PLUGIN_DEBUG: t }).debug, true);
  }
  for (const f of ["0", "f", "F", "FALSE", "false", "False"]) {
    assertEquals(load(["save"], { PLUGIN_OVERRIDE: f }).override, false);
  }
  assertEquals(load(["save", "--no-override"]).override, false);
  assertEquals(load(["save", "--override=false"]).override, false);
  assertEquals(load(["save", "--debug"]).debug, true);
});

Deno.test("settings: bad values name the variable, the value and what is accepted", () => {
  let e = assertThrows(() => load(["save"], { PLUGIN_OVERRIDE: "yes" }), SettingsError);
  assertStringIncludes(e.message, "PLUGIN_OVERRIDE");
  assertStringIncludes(e.message, '"yes"');
  assertStringIncludes(e.message, "true or false");
  e = assertThrows(() => load(["save"], { PLUGIN_COMPRESSION_LEVEL: "high" }), SettingsError);
  assertStringIncludes(e.message, "PLUGIN_COMPRESSION_LEVEL");
  e = assertThrows(() => load(["save"], { PLUGIN_BACKEND_OPERATION_TIMEOUT: "ten minutes" }), SettingsError);
  assertStringIncludes(e.message, "PLUGIN_BACKEND_OPERATION_TIMEOUT");
  assertStringIncludes(e.message, "10m");
  e = assertThrows(() => load(["save"], { PLUGIN_ARCHIVE_FORMAT: "xz" }), SettingsError);
  assertStringIncludes(e.message, "tar, gzip, zstd");
  e = assertThrows(() => load(["save"], { PLUGIN_BACKEND: "dropbox" }), SettingsError);
  assertStringIncludes(e.message, "PLUGIN_BACKEND");
  e = assertThrows(() => load(["save", "--bogus"]), SettingsError);
  assertStringIncludes(e.message, "--bogus");
  e = assertThrows(() => load(["save"], { PLUGIN_ARCHIVE_FORMAT: "gzip", PLUGIN_COMPRESSION_LEVEL: "12" }));
  assertStringIncludes(e.message, "0–9");
  e = assertThrows(() => load(["save"], { PLUGIN_ARCHIVE_FORMAT: "zstd", PLUGIN_COMPRESSION_LEVEL: "22" }));
  assertStringIncludes(e.message, "1–19");
});

Deno.test("settings: ints accept Go base prefixes", () => {
  assertEquals(
    load(["save"], { PLUGIN_COMPRESSION_LEVEL: "0x3", PLUGIN_ARCHIVE_FORMAT: "zstd" }).compressionLevel,
    3,
  );
  assertEquals(load(["save"], { DRONE_BUILD_NUMBER: "010" }).buildNumber, 8);
  assertEquals(load(["save"], { DRONE_BUILD_NUMBER: "1_000" }).buildNumber, 1000);
});

Deno.test("settings: durations in Go units or bare seconds", () => {
  assertEquals(parseDuration("10m"), 600_000);
  assertEquals(parseDuration("1h30m"), 5_400_000);
  assertEquals(parseDuration("1.5s"), 1500);
  assertEquals(parseDuration("600"), 600_000);
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("10x"), undefined);
  assertEquals(parseDuration(""), undefined);
});

Deno.test("settings: modes from subcommand or plugin env, never two", () => {
  assertEquals(load(["save"]).mode, "save");
  assertEquals(load(["restore"]).mode, "restore");
  assertEquals(load(["flush"]).mode, "flush");
  assertEquals(load([], { PLUGIN_REBUILD: "true" }).mode, "save");
  assertEquals(load([], { PLUGIN_RESTORE: "true" }).mode, "restore");
  assertEquals(load([], { PLUGIN_FLUSH: "true" }).mode, "flush");
  let e = assertThrows(() => load([], { PLUGIN_REBUILD: "true", PLUGIN_RESTORE: "true" }), SettingsError);
  assertStringIncludes(e.message, "only one mode");
  e = assertThrows(() => load([], {}), SettingsError);
  assertStringIncludes(e.message, "PLUGIN_REBUILD");
  e = assertThrows(() => load(["save"], { PLUGIN_RESTORE: "true" }), SettingsError);
  assertStringIncludes(e.message, "conflicts");
});

Deno.test("settings: mounts from env (comma, trimmed) and arguments", () => {
  assertEquals(load([], { PLUGIN_REBUILD: "true", PLUGIN_MOUNT: "a, b ,c" }).mount, ["a", "b", "c"]);
  assertEquals(load(["save", "x", "--mount", "y", "z"]).mount, ["y", "x", "z"]);
  assertEquals(
    load(["save", "x"], { PLUGIN_MOUNT: "env1,env2" }).mount,
    ["x"],
    "arguments win over PLUGIN_MOUNT",
  );
  assertEquals(load(["restore"], { PLUGIN_RESTORE_KEYS: "npm-main-\n npm-, x\n" }).restoreKeys, [
    "npm-main-",
    "npm-, x",
  ]);
  assertEquals(load(["restore"], { PLUGIN_RESTORE_KEYS: "npm-main-, npm-" }).restoreKeys, [
    "npm-main-",
    "npm-",
  ]);
});

Deno.test("settings: backend defaults to s3 with a bucket, else filesystem", () => {
  assertEquals(load(["save"]).backend, "filesystem");
  assertEquals(load(["save"], { PLUGIN_BUCKET: "b" }).backend, "s3");
  assertEquals(load(["save"], { PLUGIN_BUCKET: "b", PLUGIN_BACKEND: "gcs" }).backend, "gcs");
});

Deno.test("settings: help and version", () => {
  assertEquals(loadSettings(["--help"], {}).kind, "help");
  assertEquals(loadSettings(["save", "-h"], {}).kind, "help");
  assertEquals(loadSettings(["--version"], {}).kind, "version");
  const help = helpText(VERSION);
  for (const spec of SETTING_SPECS) {
    assertStringIncludes(help, `--${spec.flag}`);
    for (const e of spec.env) assertStringIncludes(help, e);
  }
});

Deno.test("settings: secret values are collected for redaction", () => {
  const s = load(["save"], {
    PLUGIN_SECRET_KEY: "s3cr3t-value",
    PLUGIN_ACCOUNT_KEY: "azure-key",
    PLUGIN_REGION: "eu",
  });
  const secrets = secretValues(s);
  assert(secrets.includes("s3cr3t-value"));
  assert(secrets.includes("azure-key"));
  assert(!secrets.includes("eu"));
});

Deno.test("settings: every flag and env var is unique", () => {
  const flags = new Set<string>();
  const envs = new Set<string>();
  for (const spec of SETTING_SPECS) {
    for (const f of [spec.flag, ...(spec.aliases ?? [])]) {
      assert(!flags.has(f), `duplicate flag ${f}`);
      flags.add(f);
    }
    for (const e of spec.env) {
      assert(!envs.has(e), `duplicate env var ${e}`);
      envs.add(e);
    }
  }
});

Deno.test("settings: version matches deno.json", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assertEquals(VERSION, denoJson.version);
});

Deno.test("settings: closest names a typo's setting, and nothing for unrelated words", () => {
  assertEquals(closest("archive-fromat", ["archive-format", "cache-key"]), "archive-format");
  assertEquals(closest("CACHEKEY", ["CACHE_KEY", "MOUNT"]), "CACHE_KEY");
  assertEquals(closest("sav", ["save", "restore", "flush"]), "save");
  assertEquals(closest("kubernetes", ["save", "restore", "flush"]), undefined);
});

Deno.test("settings: unknown PLUGIN_* variables, known ones and deliberate extras", () => {
  assertEquals(unknownEnvWarnings({ PLUGIN_CACHE_KEY: "k", DRONE_REPO: "x", HOME: "/root" }), []);
  assertEquals(Object.keys(KNOWN_UNUSED_ENV).flatMap((k) => unknownEnvWarnings({ [k]: "x" })), []);
  const [w] = unknownEnvWarnings({ PLUGIN_ARCHIVE_FROMAT: "zstd" });
  assertStringIncludes(w, "did you mean PLUGIN_ARCHIVE_FORMAT?");
  for (const spec of SETTING_SPECS) {
    for (const e of spec.env) assertEquals(unknownEnvWarnings({ [e]: "x" }), [], e);
  }
});

Deno.test("settings: boolean flags take true/false after a space; bare booleans are no mounts", () => {
  assertEquals(load(["save", "--override", "false", "m"]).override, false);
  assertEquals(load(["save", "--override", "0", "m"]).mount, ["m"]);
  assertEquals(load(["save", "--override", "m"]).override, true);
  assertEquals(load(["save", "--override", "m"]).mount, ["m"]);
  assertEquals(load(["save", "--no-override", "m"]).override, false);
  const e = assertThrows(() => load(["save", "m", "false"]), SettingsError);
  assertStringIncludes(e.message, "is not a mount");
  assertEquals(load(["save", "--backend", "AZURE", "m"]).backend, "azure");
  assertEquals(load(["save", "--azure-access-tier", "cool", "m"]).azureAccessTier, "Cool");
});
