/**
 * Tests of `lib/key/key.ts` and `lib/key/metadata.ts`: the default key, key
 * templates over the Drone metadata, the loud fallback, startup checks and
 * restore keys. Settings are built as the CLI builds them, with
 * `loadSettings`.
 */
import { join } from "node:path";
import {
  checkKeyTemplate,
  defaultKey,
  md5Hex,
  renderKey,
  renderRestoreKeys,
  renderTemplate,
} from "../lib/key/key.ts";
import { templateData } from "../lib/key/metadata.ts";
import { TemplateExecError } from "../lib/key/template.ts";
import { loadSettings, SettingsError } from "../lib/settings.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";

function warnings(lines: string[]): string[] {
  return lines.filter((l) => l.includes("level=warn"));
}

async function md5sum(text: string): Promise<string> {
  const child = new Deno.Command("md5sum", { stdin: "piped", stdout: "piped" }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  return new TextDecoder().decode((await child.output()).stdout).split(/\s+/)[0];
}

const DRONE = {
  DRONE_REPO_NAME: "app",
  DRONE_REPO_NAMESPACE: "acme",
  DRONE_REPO_OWNER: "acme-owner",
  DRONE_REPO_LINK: "https://git.example.com/acme/app",
  DRONE_REPO_AVATAR: "https://git.example.com/avatar.png",
  DRONE_REPO_BRANCH: "trunk",
  DRONE_REPO_PRIVATE: "true",
  DRONE_REPO_TRUSTED: "false",
  DRONE_BUILD_NUMBER: "42",
  DRONE_BUILD_CREATED: "1700000000",
  DRONE_BUILD_STARTED: "1700000001",
  DRONE_BUILD_FINISHED: "1700000002",
  DRONE_BUILD_EVENT: "pull_request",
  DRONE_BUILD_STATUS: "failure",
  DRONE_BUILD_LINK: "https://ci.example.com/acme/app/42",
  DRONE_DEPLOY_TO: "production",
  DRONE_COMMIT_BRANCH: "feature/x",
  DRONE_COMMIT_SHA: "0123abcd",
  DRONE_COMMIT_REF: "refs/pull/7/head",
  DRONE_COMMIT_LINK: "https://git.example.com/acme/app/commit/0123abcd",
  DRONE_COMMIT_MESSAGE: "fix: things",
  DRONE_REMOTE_URL: "https://git.example.com/acme/app.git",
  DRONE_COMMIT_AUTHOR: "Dev",
  DRONE_COMMIT_AUTHOR_EMAIL: "dev@example.com",
  DRONE_COMMIT_AUTHOR_AVATAR: "https://git.example.com/dev.png",
};

Deno.test("default key: MD5 hex of the branch (master by default), as the Go plugin", async () => {
  const { log, lines } = capture();
  assertEquals(await renderKey(settingsFrom({}), log), "eb0a191797624dd3a48fa681d3061212");
  assertEquals(defaultKey(settingsFrom({})), "eb0a191797624dd3a48fa681d3061212");
  assertEquals(
    await renderKey(settingsFrom({ DRONE_COMMIT_BRANCH: "develop" }), log),
    await md5sum("develop"),
  );
  assertEquals(md5Hex("feature/x"), await md5sum("feature/x"));
  assertEquals(warnings(lines), []);
});

Deno.test("template key over the Drone metadata", async () => {
  const { log, lines } = capture();
  const s = settingsFrom({
    ...DRONE,
    PLUGIN_CACHE_KEY:
      '{{ .Repo.Name }}-{{ .Commit.Branch | replace "/" "-" }}-{{ .Build.Number }}-{{ arch }}',
  });
  checkKeyTemplate(s);
  const arch = Deno.build.arch === "x86_64" ? "amd64" : "arm64";
  assertEquals(await renderKey(s, log), `app-feature-x-42-${arch}`);
  assertEquals(warnings(lines), []);
});

Deno.test("every metadata field of reference A§3.2, with Go types", async () => {
  const { log } = capture();
  const s = settingsFrom(DRONE);
  const fields = [
    "Repo.Avatar",
    "Repo.Branch",
    "Repo.Link",
    "Repo.Name",
    "Repo.Namespace",
    "Repo.Owner",
    "Repo.Private",
    "Repo.Trusted",
    "Build.Created",
    "Build.Deploy",
    "Build.Event",
    "Build.Finished",
    "Build.Link",
    "Build.Number",
    "Build.Started",
    "Build.Status",
    "Commit.Author.Avatar",
    "Commit.Author.Email",
    "Commit.Author.Name",
    "Commit.Branch",
    "Commit.Link",
    "Commit.Message",
    "Commit.Ref",
    "Commit.Remote",
    "Commit.Sha",
  ];
  const template = fields.map((f) => `{{ .${f} }}`).join("|");
  assertEquals((await renderTemplate(template, s, log)).split("|"), [
    DRONE.DRONE_REPO_AVATAR,
    DRONE.DRONE_REPO_BRANCH,
    DRONE.DRONE_REPO_LINK,
    DRONE.DRONE_REPO_NAME,
    DRONE.DRONE_REPO_NAMESPACE,
    DRONE.DRONE_REPO_OWNER,
    "true",
    "false",
    "1700000000",
    "production",
    "pull_request",
    "1700000002",
    DRONE.DRONE_BUILD_LINK,
    "42",
    "1700000001",
    "failure",
    DRONE.DRONE_COMMIT_AUTHOR_AVATAR,
    DRONE.DRONE_COMMIT_AUTHOR_EMAIL,
    DRONE.DRONE_COMMIT_AUTHOR,
    "feature/x",
    DRONE.DRONE_COMMIT_LINK,
    "fix: things",
    "refs/pull/7/head",
    DRONE.DRONE_REMOTE_URL,
    "0123abcd",
  ]);
  assertEquals(
    await renderTemplate('{{ printf "%T %T %T %T" .Build.Number .Repo.Private .Commit.Author . }}', s, log),
    "int bool metadata.Author metadata.Metadata",
  );
});

Deno.test(".Commit.Ref comes from DRONE_COMMIT_REF (default refs/heads/master), not the SHA", async () => {
  const { log } = capture();
  assertEquals(
    await renderTemplate("{{ .Commit.Ref }}", settingsFrom({ DRONE_COMMIT_SHA: "abc" }), log),
    "refs/heads/master",
  );
  const s = settingsFrom({ DRONE_COMMIT_SHA: "abc", DRONE_COMMIT_REF: "refs/tags/v1" });
  assertEquals(await renderTemplate("{{ .Commit.Ref }}", s, log), "refs/tags/v1");
  assertEquals(templateData(s).fields.get("Commit") !== undefined, true);
});

Deno.test("unknown field: a warning naming the template and the reason, then the fallback key", async () => {
  const { log, lines } = capture();
  const s = settingsFrom({ DRONE_COMMIT_BRANCH: "main", PLUGIN_CACHE_KEY: "{{ .Repo.Nam }}-v1" });
  checkKeyTemplate(s); // parses: the error is only known at execution, as in Go
  assertEquals(await renderKey(s, log), await md5sum("main"));
  const warn = warnings(lines);
  assertEquals(warn.length, 1, lines.join("\n"));
  assertStringIncludes(warn[0], "cache key template failed");
  assertStringIncludes(warn[0], "{{ .Repo.Nam }}-v1");
  assertStringIncludes(warn[0], "can't evaluate field Nam in type metadata.Repo");
  assertStringIncludes(warn[0], `fallback_key=${await md5sum("main")}`);
});

Deno.test('checksum of a missing file: a loud warning, and "" in the key as in the Go plugin', async () => {
  const dir = await Deno.makeTempDir({ prefix: "ci-cache-key-" });
  try {
    const { log, lines } = capture();
    const missing = join(dir, "go.sum");
    const s = settingsFrom({ PLUGIN_CACHE_KEY: `app-{{ checksum "${missing}" }}-end` });
    assertEquals(await renderKey(s, log), "app--end");
    const warn = warnings(lines);
    assertEquals(warn.length, 1, lines.join("\n"));
    assertStringIncludes(warn[0], "checksum: the file cannot be read");
    assertStringIncludes(warn[0], missing);
    assertStringIncludes(warn[0], "no such file");

    // Once the file exists, the same template renders its MD5.
    await Deno.writeTextFile(missing, "module x\n");
    assertEquals(await renderKey(s, capture().log), `app-${await md5sum("module x\n")}-end`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hashFiles in a key; no match warns and renders the empty component", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ci-cache-key-" });
  try {
    await Deno.mkdir(join(dir, "a"));
    await Deno.writeTextFile(join(dir, "a", "yarn.lock"), "lock\n");
    const { log, lines } = capture();
    const key = await renderKey(
      settingsFrom({ PLUGIN_CACHE_KEY: `yarn-{{ hashFiles "${dir}/**/yarn.lock" }}` }),
      log,
    );
    assert(/^yarn-[0-9a-f]{64}$/.test(key), key);
    assertEquals(warnings(lines), []);
    const none = await renderKey(
      settingsFrom({ PLUGIN_CACHE_KEY: `yarn-{{ hashFiles "${dir}/**/none.lock" }}` }),
      log,
    );
    assertEquals(none, "yarn-");
    assertEquals(warnings(lines).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("syntax error: SettingsError naming the setting, with Go's message, column and caret", async () => {
  const s = settingsFrom({ PLUGIN_CACHE_KEY: "{{ .Repo.Name }" });
  const err = assertThrows(() => checkKeyTemplate(s), SettingsError);
  assertStringIncludes(err.message, 'PLUGIN_CACHE_KEY: template: cacheKey:1:14: unexpected "}" in operand');
  assertStringIncludes(err.message, "    {{ .Repo.Name }\n                  ^");
  await assertRejects(() => renderKey(s, capture().log), SettingsError, "cacheKey:1:14");
  const flag = loadSettings(["save", "--cache-key", "{{ nope }}"], {});
  assert(flag.kind === "run");
  assertThrows(
    () => checkKeyTemplate(flag.settings),
    SettingsError,
    '--cache-key: template: cacheKey:1:3: function "nope" not defined',
  );
});

Deno.test("restore keys: checked at startup and rendered in order; failing entries are dropped loudly", async () => {
  const bad = settingsFrom({ PLUGIN_RESTORE_KEYS: "ok-{{ .Repo.Name }}\n{{ if }}" });
  assertThrows(
    () => checkKeyTemplate(bad),
    SettingsError,
    "PLUGIN_RESTORE_KEYS entry 2: template: restoreKeys[1]:1:6",
  );

  const { log, lines } = capture();
  const s = settingsFrom({
    ...DRONE,
    PLUGIN_RESTORE_KEYS:
      "{{ .Repo.Name }}-{{ .Commit.Branch }}-\n{{ .Repo.Name }}-\n{{ .Nope }}\n{{ .Build.Link | trunc 0 }}",
  });
  checkKeyTemplate(s);
  assertEquals(await renderRestoreKeys(s, log), ["app-feature/x-", "app-"]);
  const warn = warnings(lines);
  assertEquals(warn.length, 2, lines.join("\n"));
  assertStringIncludes(warn[0], "can't evaluate field Nope");
  assertStringIncludes(warn[1], "rendered empty");
});

Deno.test("renderTemplate: no fallback, execution errors are thrown", async () => {
  const err = await assertRejects(
    () => renderTemplate("{{ .X }}", settingsFrom({}), capture().log),
    TemplateExecError,
  );
  assertStringIncludes(err.message, 'executing "cacheKey" at <.X>');
});
