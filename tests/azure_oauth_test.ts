/**
 * Azure backend authentication end to end: Azurite over HTTPS in OAuth mode
 * plus the test-only Entra token endpoint (`scripts/servers/entra.ts`), with
 * a throwaway CA (`scripts/servers/tls.ts`).
 *
 * The SDK talks through `node:https`, which trusts the test CA only through
 * `NODE_EXTRA_CA_CERTS`, read when the process starts. So every scenario
 * runs in a subprocess: either the ci-cache CLI (`main.ts`), or this very
 * file run as a script (`deno run -A tests/azure_oauth_test.ts <scenario>`),
 * which opens the backend from the environment exactly as the CLI does and
 * prints a JSON report of what happened.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { type AzuriteOAuthServer, startAzuriteOAuth } from "../scripts/servers/azurite.ts";
import { fakeOidcToken } from "../scripts/servers/entra.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const SELF = new URL(import.meta.url).pathname;

/** What the child prints. */
interface ChildReport {
  ok: boolean;
  steps: string[];
  error?: { name: string; message: string };
  logs: string[];
}

// ── child mode ──────────────────────────────────────────────────────────────
async function child(): Promise<void> {
  const { Logger } = await import("../lib/log.ts");
  const { loadSettings } = await import("../lib/settings.ts");
  const { createAzureBackend } = await import("../lib/storage/azure/backend.ts");
  const logs: string[] = [];
  const steps: string[] = [];
  const report = (r: Omit<ChildReport, "logs">) => console.log(JSON.stringify({ ...r, logs }));
  try {
    const loaded = loadSettings(["save"], Deno.env.toObject());
    if (loaded.kind !== "run") throw new Error("unexpected help/version");
    const log = new Logger({ level: "debug", sink: (line) => logs.push(line) });
    const backend = await createAzureBackend(loaded.settings, log);
    steps.push("connected");
    const name = `oauth-${crypto.randomUUID()}/obj`;
    const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 31 + 7) & 255);
    await backend.put(name, new Blob([data]).stream(), { cicache_format: "tar" });
    steps.push("put");
    const info = await backend.stat(name);
    if (info?.size !== data.length || info.meta.cicache_format !== "tar") throw new Error("stat mismatch");
    steps.push("stat");
    const got = new Uint8Array(await new Response(await backend.get(name)).arrayBuffer());
    if (got.length !== data.length || !got.every((v, i) => v === data[i])) throw new Error("bytes differ");
    steps.push("get");
    const listed: string[] = [];
    for await (const o of backend.list(name.split("/")[0] + "/")) listed.push(o.name);
    if (listed.length !== 1 || listed[0] !== name) throw new Error(`list gave ${listed}`);
    steps.push("list");
    await backend.delete(name);
    if ((await backend.stat(name)) !== null) throw new Error("delete left the blob");
    steps.push("delete");
    report({ ok: true, steps });
  } catch (err) {
    const e = err as Error;
    report({ ok: false, steps, error: { name: e.name, message: e.message } });
  }
}

if (import.meta.main) {
  await child();
  Deno.exit(0);
}

// ── parent (deno test) ──────────────────────────────────────────────────────
async function runChild(env: Record<string, string>): Promise<ChildReport & { raw: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SELF],
    env: { ...env, NO_COLOR: "1" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const line = stdout.trim().split("\n").pop() ?? "";
  try {
    return { ...JSON.parse(line), raw: stdout + stderr };
  } catch {
    throw new Error(`child printed no report.\nstdout: ${stdout}\nstderr: ${stderr}`);
  }
}

/** Environment a CI step would have: PATH/HOME for Deno, plus the settings. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "DENO_DIR", "TMPDIR"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return env;
}

/** `s.env` without the OIDC token and tenant/client (to build other methods on). */
function without(env: Record<string, string>, ...keys: string[]): Record<string, string> {
  const out = { ...env };
  for (const k of keys) delete out[k];
  return out;
}

async function withOAuth(fn: (s: AzuriteOAuthServer) => Promise<void>): Promise<void> {
  const s = await startAzuriteOAuth();
  try {
    await fn(s);
  } finally {
    await s.stop();
  }
}

const OPTS = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name:
    "azure oauth: OIDC federated token from PLUGIN_AZURE_OIDC_TOKEN, PLUGIN_OIDC_TOKEN_ID and a token file",
  ...OPTS,
  fn: () =>
    withOAuth(async (s) => {
      const env = { ...baseEnv(), ...s.env };
      const a = await runChild(env);
      assert(a.ok, `OIDC via PLUGIN_AZURE_OIDC_TOKEN failed: ${a.error?.message}\n${a.raw}`);
      assertEquals(a.steps, ["connected", "put", "stat", "get", "list", "delete"]);
      const authLine = a.logs.find((l) => l.includes('msg="azure backend"'));
      assert(authLine !== undefined, "no log line names the backend and auth method");
      assertStringIncludes(authLine, "auth=oidc");
      assertStringIncludes(authLine, "PLUGIN_AZURE_OIDC_TOKEN");
      assert(!a.raw.includes(s.entra.federatedToken), "the federated token leaked into the output");

      const b = await runChild({
        ...without(env, "PLUGIN_AZURE_OIDC_TOKEN"),
        PLUGIN_OIDC_TOKEN_ID: s.entra.federatedToken,
      });
      assert(b.ok, `OIDC via PLUGIN_OIDC_TOKEN_ID failed: ${b.error?.message}`);
      assertStringIncludes(b.logs.find((l) => l.includes("auth=oidc")) ?? "", "PLUGIN_OIDC_TOKEN_ID");

      const file = await Deno.makeTempFile({ prefix: "ci-cache-azure-token-" });
      try {
        await Deno.writeTextFile(file, s.entra.federatedToken + "\n");
        const c = await runChild({
          ...without(env, "PLUGIN_AZURE_OIDC_TOKEN"),
          AZURE_FEDERATED_TOKEN_FILE: file,
        });
        assert(c.ok, `OIDC via AZURE_FEDERATED_TOKEN_FILE failed: ${c.error?.message}`);
        assertStringIncludes(c.logs.find((l) => l.includes("auth=oidc")) ?? "", "AZURE_FEDERATED_TOKEN_FILE");
        assert(
          !c.raw.includes(s.entra.federatedToken),
          "the token read from the file leaked into the output",
        );
      } finally {
        await Deno.remove(file);
      }
      const assertions = s.entra.requests.filter((r) => r.grant === "assertion" && r.accepted);
      assert(assertions.length >= 3, `expected 3 accepted token exchanges, saw ${assertions.length}`);
    }),
});

Deno.test({
  name:
    "azure oauth: a rejected or expired OIDC token fails clearly, naming the credential and the CI system",
  ...OPTS,
  fn: () =>
    withOAuth(async (s) => {
      const unknown = fakeOidcToken();
      const a = await runChild({ ...baseEnv(), ...s.env, PLUGIN_AZURE_OIDC_TOKEN: unknown });
      assert(!a.ok, "an unknown token was accepted");
      assertEquals(a.error?.name, "AuthFailedError");
      assertStringIncludes(a.error!.message, "Entra ID rejected the OIDC token from PLUGIN_AZURE_OIDC_TOKEN");
      assertStringIncludes(a.error!.message, "AADSTS700211");
      assertStringIncludes(a.error!.message, "comes from the CI system");
      assert(!a.raw.includes(unknown), "the rejected token leaked into the output");

      const expired = fakeOidcToken({ lifetime: -120 });
      const b = await runChild({ ...baseEnv(), ...s.env, PLUGIN_AZURE_OIDC_TOKEN: expired });
      assert(!b.ok, "an expired token was accepted");
      assertEquals(b.error?.name, "AuthFailedError");
      assertStringIncludes(b.error!.message, "the token has expired");
      assertStringIncludes(b.error!.message, "AADSTS700024");

      const wrongClient = await runChild({
        ...baseEnv(),
        ...s.env,
        PLUGIN_AZURE_CLIENT_ID: "11111111-2222-3333-4444-555555555555",
      });
      assertEquals(wrongClient.error?.name, "AuthFailedError");
      assertStringIncludes(wrongClient.error!.message, "client 11111111-2222-3333-4444-555555555555");
      const rejected = s.entra.requests.filter((r) => !r.accepted).map((r) => r.error);
      assert(
        rejected.includes("AADSTS700211") && rejected.includes("AADSTS700024"),
        `rejections: ${rejected}`,
      );
    }),
});

Deno.test({
  name: "azure oauth: service principal secret works; a wrong secret fails naming the setting",
  ...OPTS,
  fn: () =>
    withOAuth(async (s) => {
      const sp = { ...baseEnv(), ...without(s.env, "PLUGIN_AZURE_OIDC_TOKEN") };
      const a = await runChild({ ...sp, PLUGIN_AZURE_CLIENT_SECRET: s.entra.clientSecret });
      assert(a.ok, `service principal failed: ${a.error?.message}`);
      assertStringIncludes(
        a.logs.find((l) => l.includes('msg="azure backend"')) ?? "",
        "auth=service-principal",
      );
      assert(!a.raw.includes(s.entra.clientSecret), "the client secret leaked into the output");

      const b = await runChild({ ...sp, AZURE_CLIENT_SECRET: "not-the-secret-value" });
      assert(!b.ok, "a wrong secret was accepted");
      assertEquals(b.error?.name, "AuthFailedError");
      assertStringIncludes(b.error!.message, "rejected the service principal");
      assertStringIncludes(b.error!.message, "AZURE_CLIENT_SECRET");
      assertStringIncludes(b.error!.message, "AADSTS7000215");
      assert(s.entra.requests.some((r) => r.grant === "secret" && r.accepted));
    }),
});

Deno.test({
  name: "azure oauth: OIDC wins over a service principal and a shared key; shared key works over HTTPS too",
  ...OPTS,
  fn: () =>
    withOAuth(async (s) => {
      const all = {
        ...baseEnv(),
        ...s.env,
        PLUGIN_AZURE_CLIENT_SECRET: "wrong-but-unused",
        PLUGIN_ACCOUNT_KEY: s.azurite.accountKey,
      };
      const a = await runChild(all);
      assert(a.ok, `OIDC with everything set failed: ${a.error?.message}`);
      assertStringIncludes(a.logs.find((l) => l.includes('msg="azure backend"')) ?? "", "auth=oidc");
      assert(!s.entra.requests.some((r) => r.grant === "secret"), "the service principal was tried");

      const key = await runChild({
        ...baseEnv(),
        ...without(s.env, "PLUGIN_AZURE_OIDC_TOKEN", "PLUGIN_AZURE_TENANT_ID", "PLUGIN_AZURE_CLIENT_ID"),
        PLUGIN_ACCOUNT_KEY: s.azurite.accountKey,
      });
      assert(key.ok, `shared key over HTTPS failed: ${key.error?.message}`);
      assertStringIncludes(key.logs.find((l) => l.includes('msg="azure backend"')) ?? "", "auth=shared-key");
    }),
});

Deno.test({
  name: "azure oauth: CLI save and restore with a federated token; a rejected token fails the step clearly",
  ...OPTS,
  fn: () =>
    withOAuth(async (s) => {
      const work = await Deno.makeTempDir({ prefix: "ci-cache-azure-e2e-" });
      try {
        const mount = `${work}/cache`;
        await Deno.mkdir(`${mount}/sub`, { recursive: true });
        await Deno.writeTextFile(`${mount}/a.txt`, "alpha");
        await Deno.writeFile(`${mount}/sub/b.bin`, new Uint8Array(300_000).map((_, i) => i % 251));
        const env = {
          ...baseEnv(),
          ...s.env,
          PLUGIN_MOUNT: mount,
          PLUGIN_CACHE_KEY: "oidc-e2e",
          PLUGIN_ARCHIVE_FORMAT: "zstd",
        };
        const cli = async (extra: Record<string, string>) => {
          const out = await new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", MAIN],
            env: { ...env, ...extra },
            clearEnv: true,
            cwd: work,
            stdout: "piped",
            stderr: "piped",
          }).output();
          return { code: out.code, log: new TextDecoder().decode(out.stderr) };
        };
        const save = await cli({ PLUGIN_REBUILD: "true" });
        assertEquals(save.code, 0, `save failed:\n${save.log}`);
        assertStringIncludes(save.log, "auth=oidc");
        assert(!save.log.includes(s.entra.federatedToken), "the token leaked into the CLI log");
        await Deno.remove(mount, { recursive: true });
        const restore = await cli({ PLUGIN_RESTORE: "true" });
        assertEquals(restore.code, 0, `restore failed:\n${restore.log}`);
        assertEquals(await Deno.readTextFile(`${mount}/a.txt`), "alpha");
        assertEquals((await Deno.readFile(`${mount}/sub/b.bin`)).length, 300_000);

        const bad = fakeOidcToken();
        const refused = await cli({ PLUGIN_RESTORE: "true", PLUGIN_AZURE_OIDC_TOKEN: bad });
        assertEquals(refused.code, 1, `a rejected token must fail the step:\n${refused.log}`);
        assertStringIncludes(refused.log, "Entra ID rejected the OIDC token");
        assert(!refused.log.includes(bad), "the rejected token leaked into the CLI log");
      } finally {
        await Deno.remove(work, { recursive: true });
      }
    }),
});
