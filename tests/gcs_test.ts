/**
 * Tests of the GCS backend against firebase-tools' Cloud Storage emulator (started here on 127.0.0.1),
 * with the test-only Google STS/IAM/OAuth fake for the credential paths.
 *
 * @module
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import { backendConformance, failingStream, readAll, seededBytes, streamOf } from "./backend_conformance.ts";
import { createGcsBackend, GcsBackend, parseAcl, parseEncryptionKey } from "../lib/storage/gcs/backend.ts";
import {
  federatedTokenSource,
  type GcsAuth,
  RefreshingToken,
  resolveGcsAuth,
  tokenAuth,
} from "../lib/storage/gcs/auth.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  type Backend,
  InvalidSettingsError,
  NotFoundError,
  UnavailableError,
} from "../lib/storage/backend.ts";
import { Logger } from "../lib/log.ts";
import type { Settings } from "../lib/settings.ts";
import { type GcsServer, startGcs } from "../scripts/servers/gcs.ts";
import { startEditingProxy } from "../scripts/servers/faults.ts";
import { type GoogleSts, startGoogleSts } from "../scripts/servers/google_sts.ts";

const KiB = 1024;
const noAuth: GcsAuth = { method: "none", headers: () => Promise.resolve({}), sdk: { authenticated: false } };
const SA = "ci-cache-test@example-project.iam.gserviceaccount.com";
const OIDC = "eyJhbGciOiJSUzI1NiJ9.harness-oidc-token-for-tests.c2ln";
const opts = { sanitizeOps: false, sanitizeResources: false };

/** Settings as the CLI would build them from this environment (save mode). */
function gcsSettings(env: Record<string, string>): Settings {
  return settingsFrom({ PLUGIN_REBUILD: "true", PLUGIN_BACKEND: "gcs", ...env }, []);
}

function federationEnv(sts: GoogleSts, token = OIDC, sa = SA): Record<string, string> {
  return {
    PLUGIN_OIDC_TOKEN_ID: token,
    PLUGIN_PROJECT_NUMBER: "123456789",
    PLUGIN_POOL_ID: "ci-pool",
    PLUGIN_PROVIDER_ID: "harness",
    PLUGIN_SERVICE_ACCOUNT_EMAIL: sa,
    PLUGIN_STS_ENDPOINT: sts.url,
    PLUGIN_IAM_ENDPOINT: sts.url,
  };
}

const AUDIENCE =
  "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/ci-pool/providers/harness";

async function roundTrip(backend: Backend, name: string, data: Uint8Array): Promise<void> {
  await backend.put(name, streamOf(data, 70_001), { cicache_format: "zstd" });
  const got = await readAll(await backend.get(name));
  assertEquals(got.length, data.length);
  assert(got.every((b, i) => b === data[i]), "bytes differ after the round trip");
}

// ── conformance ─────────────────────────────────────────────────────────

backendConformance("gcs (chunked resumable upload)", async () => {
  const gcs = await startGcs();
  return {
    backend: new GcsBackend({
      bucket: "conformance",
      endpoint: gcs.endpoint,
      auth: noAuth,
      uploadMode: "chunked",
      partSize: 256 * KiB,
      concurrency: 3,
      listPageSize: 5,
    }),
    teardown: gcs.stop,
  };
});

backendConformance("gcs (single-request resumable upload)", async () => {
  const gcs = await startGcs();
  return {
    backend: new GcsBackend({
      bucket: "conformance",
      endpoint: gcs.endpoint,
      auth: noAuth,
      uploadMode: "single",
      partSize: 1024 * KiB,
      concurrency: 2,
      listPageSize: 4,
    }),
    teardown: gcs.stop,
  };
});

// ── behaviour beyond the conformance suite ─────────────────────────────

Deno.test({
  name: "gcs: chunked upload resumes nothing it should not; a failed source cancels the session",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    try {
      const backend = new GcsBackend({
        bucket: "b",
        endpoint: gcs.endpoint,
        auth: noAuth,
        partSize: 256 * KiB,
      });
      const err = await assertRejects(() => backend.put("k/m", failingStream(seededBytes(700 * KiB, 5)), {}));
      assertEquals(err.message, "source failed mid-stream", "put rethrows the source's own error");
      const seen = await gcs.requests();
      const puts = seen.filter((r) => r.method === "PUT");
      assertEquals(puts.length, 2, "two full 256 KiB chunks were sent before the source failed");
      assert(
        seen.some((r) => r.method === "DELETE" && r.query.upload_id),
        "the upload session was cancelled",
      );
      assertEquals(await backend.stat("k/m"), null);
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: downloads use parallel ranged reads fed in order, pinned to the generation",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    try {
      const backend = new GcsBackend({
        bucket: "b",
        endpoint: gcs.endpoint,
        auth: noAuth,
        partSize: 256 * KiB,
        concurrency: 4,
      });
      const data = seededBytes(2 * 1024 * KiB + 999, 11);
      await roundTrip(backend, "ranged/obj", data);
      const gets = (await gcs.requests()).filter((r) =>
        r.method === "GET" && r.path.startsWith("/download/")
      );
      assertEquals(gets.length, 9, "one request per 256 KiB range");
      assert(gets.every((r) => r.query.generation && r.query.alt === "media"), "ranges name the generation");
      const info = await backend.stat("ranged/obj");
      assertEquals(info?.meta.cicache_format, "zstd");
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: a cancelled download stops reading ahead",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    try {
      const backend = new GcsBackend({
        bucket: "b",
        endpoint: gcs.endpoint,
        auth: noAuth,
        partSize: 256 * KiB,
        concurrency: 2,
      });
      const data = seededBytes(4 * 1024 * KiB, 2);
      await backend.put("big", streamOf(data), {});
      const reader = (await backend.get("big")).getReader();
      // The head range is handed on as its bytes arrive: the first chunk may be shorter than the range.
      const first = (await reader.read()).value!;
      assert(first.length > 0 && first.length <= 256 * KiB, `first chunk of ${first.length} bytes`);
      assert(first.every((b, i) => b === data[i]), "the first chunk is not the object's first bytes");
      await reader.cancel();
      await new Promise((r) => setTimeout(r, 200));
      const gets = (await gcs.requests()).filter((r) =>
        r.method === "GET" && r.path.startsWith("/download/")
      );
      assert(gets.length <= 3, `read-ahead is bounded by the concurrency, saw ${gets.length} range requests`);
    } finally {
      await gcs.stop();
    }
  },
});

/** Drops the `Range` header lines of request heads (GETs only, no bodies): a server that ignores ranges. */
function stripRange(chunk: Uint8Array): Uint8Array {
  const text = new TextDecoder("latin1").decode(chunk).replace(/^range:[^\r\n]*\r\n/gim, "");
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

Deno.test({
  name: "gcs: a server that ignores ranges: an object within one range downloads whole, a larger one fails",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    const proxy = startEditingProxy(Number(new URL(gcs.endpoint).port), () => ({ request: stripRange }));
    try {
      const owner = new GcsBackend({
        bucket: "b",
        endpoint: gcs.endpoint,
        auth: noAuth,
        partSize: 256 * KiB,
      });
      const reader = new GcsBackend({
        bucket: "b",
        endpoint: `http://127.0.0.1:${proxy.port}`,
        auth: noAuth,
        partSize: 256 * KiB,
        retries: 1,
        retryBaseMs: 1,
      });
      const small = seededBytes(100 * KiB, 5);
      await owner.put("small", streamOf(small), {});
      assertEquals(await readAll(await reader.get("small")), small);
      // The 200 of the first range is cut at the range's end (256 KiB), the second range's 200 is refused.
      await owner.put("large", streamOf(seededBytes(600 * KiB, 6)), {});
      await assertRejects(
        async () => await readAll(await reader.get("large")),
        Error,
        "came back as the whole object",
      );
    } finally {
      proxy.close();
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: workload identity federation: OIDC token → STS → impersonation → storage, no secret logged",
  ...opts,
  async fn() {
    const sts = await startGoogleSts({ oidcTokens: [OIDC], audience: AUDIENCE, serviceAccounts: [SA] });
    const gcs = await startGcs();
    try {
      const { log, lines } = capture();
      const backend = await createGcsBackend(gcsSettings({ ...gcs.env, ...federationEnv(sts) }), log);
      await roundTrip(backend, "wif/obj", seededBytes(300 * KiB, 3));
      const exchange = sts.seen.find((s) => s.path === "/v1/token")!;
      assertEquals(exchange.body.subject_token, OIDC);
      assertEquals(exchange.body.audience, AUDIENCE);
      assertEquals(exchange.body.grant_type, "urn:ietf:params:oauth:grant-type:token-exchange");
      assertEquals(exchange.body.subject_token_type, "urn:ietf:params:oauth:token-type:id_token");
      const impersonation = sts.seen.find((s) => s.path.includes(":generateAccessToken"))!;
      assertStringIncludes(impersonation.path, encodeURIComponent(SA));
      assertEquals(impersonation.status, 200);
      assertEquals(sts.issued.length, 1);
      const seen = await gcs.requests();
      assert(seen.length >= 4, "the emulator saw the requests");
      for (const r of seen) assertEquals(r.authorization, `Bearer ${sts.issued[0]}`, `${r.method} ${r.path}`);
      const text = lines.join("\n");
      assertStringIncludes(text, "workload identity federation as " + SA);
      assert(!text.includes(OIDC) && !text.includes(sts.issued[0]), "a token reached the log");
    } finally {
      await gcs.stop();
      await sts.stop();
    }
  },
});

Deno.test({
  name: "gcs: the federated token is exchanged again before it expires",
  ...opts,
  async fn() {
    const shortLived = await startGoogleSts({
      oidcTokens: [OIDC],
      serviceAccounts: [SA],
      lifetimeSeconds: 60,
    });
    const longLived = await startGoogleSts({
      oidcTokens: [OIDC],
      serviceAccounts: [SA],
      lifetimeSeconds: 3600,
    });
    try {
      const federation = (sts: GoogleSts) =>
        federatedTokenSource({
          oidcToken: OIDC,
          projectNumber: "1",
          poolId: "p",
          providerId: "q",
          serviceAccount: SA,
          stsEndpoint: sts.url,
          iamEndpoint: sts.url,
          timeoutMs: 10_000,
          log: new Logger({ sink: () => {} }),
        });
      const short = federation(shortLived);
      const a = await short.get();
      const b = await short.get();
      assert(a.token !== b.token, "a token within the refresh margin of its expiry was reused");
      assertEquals(shortLived.issued.length, 2);
      assertEquals(shortLived.seen.filter((s) => s.path === "/v1/token").length, 2, "STS exchange ran again");
      const long = federation(longLived);
      assertEquals((await long.get()).token, (await long.get()).token);
      assertEquals(longLived.issued.length, 1);
    } finally {
      await shortLived.stop();
      await longLived.stop();
    }
  },
});

Deno.test({
  name: "gcs: an OIDC token refused by STS is an AuthFailedError that points at the CI system",
  ...opts,
  async fn() {
    const sts = await startGoogleSts({ oidcTokens: ["another-token"], serviceAccounts: [SA] });
    try {
      const err = await assertRejects(
        () => createGcsBackend(gcsSettings({ PLUGIN_BUCKET: "b", ...federationEnv(sts) }), capture().log),
        AuthFailedError,
      );
      assertStringIncludes(err.message, "refused the OIDC token (PLUGIN_OIDC_TOKEN_ID)");
      assertStringIncludes(err.message, "comes from the CI system");
      assertStringIncludes(err.message, 'Invalid value for "subject_token"');
      assert(!err.message.includes(OIDC), "the token is in the message");
    } finally {
      await sts.stop();
    }
  },
});

Deno.test({
  name: "gcs: impersonation denied is an AccessDeniedError naming roles/iam.workloadIdentityUser",
  ...opts,
  async fn() {
    const sts = await startGoogleSts({
      oidcTokens: [OIDC],
      serviceAccounts: ["other@p.iam.gserviceaccount.com"],
    });
    try {
      const err = await assertRejects(
        () => createGcsBackend(gcsSettings({ PLUGIN_BUCKET: "b", ...federationEnv(sts) }), capture().log),
        AccessDeniedError,
      );
      assertStringIncludes(err.message, "roles/iam.workloadIdentityUser");
      assertStringIncludes(err.message, SA);
    } finally {
      await sts.stop();
    }
  },
});

Deno.test("gcs: half-configured federation names the missing settings", async () => {
  const err = await assertRejects(
    () =>
      createGcsBackend(
        gcsSettings({ PLUGIN_BUCKET: "b", PLUGIN_OIDC_TOKEN_ID: OIDC, PLUGIN_PROJECT_NUMBER: "1" }),
        capture().log,
      ),
    InvalidSettingsError,
  );
  assertStringIncludes(err.message, "PLUGIN_POOL_ID");
  assertStringIncludes(err.message, "PLUGIN_SERVICE_ACCOUNT_EMAIL");
});

Deno.test({
  name: "gcs: JSON key (content and file path): signed JWT exchanged at token_uri, token reaches storage",
  ...opts,
  async fn() {
    const sts = await startGoogleSts();
    const gcs = await startGcs();
    const dir = await Deno.makeTempDir();
    try {
      const key = sts.jsonKey();
      const { log, lines } = capture();
      const backend = await createGcsBackend(gcsSettings({ ...gcs.env, PLUGIN_JSON_KEY: key }), log);
      await roundTrip(backend, "key/obj", seededBytes(1000, 1));
      assertEquals(sts.issued.length, 1);
      const seen = await gcs.requests();
      assert(
        seen.every((r) => r.authorization === `Bearer ${sts.issued[0]}`),
        "storage saw another credential",
      );
      assertStringIncludes(lines.join("\n"), `JSON key of ${SA}`);
      assert(!lines.join("\n").includes(sts.issued[0]), "the access token reached the log");
      await Deno.writeTextFile(`${dir}/key.json`, key);
      const fromFile = await createGcsBackend(
        gcsSettings({ ...gcs.env, GCS_CACHE_JSON_KEY: `${dir}/key.json` }),
        log,
      );
      assert((await fromFile.stat("key/obj")) !== null);
      assertEquals(sts.issued.length, 2);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await gcs.stop();
      await sts.stop();
    }
  },
});

Deno.test("gcs: a bad JSON key is an InvalidSettingsError naming PLUGIN_JSON_KEY, never echoing it", async () => {
  const secret = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIsecret';
  const cases: [string, string][] = [
    [secret, "PLUGIN_JSON_KEY is not valid JSON"],
    ['{"type": "authorized_user", "client_id": "x"}', 'its "type" is "authorized_user"'],
    ['{"type": "service_account", "client_email": "a@b"}', "lacks private_key"],
    ["/nonexistent/key.json", "nor a readable key file"],
    [
      '{"type": "service_account", "client_email": "a@b", "private_key": "not a pem"}',
      "not a PEM PKCS#8 RSA key",
    ],
  ];
  for (const [value, expected] of cases) {
    const err = await assertRejects(
      () => createGcsBackend(gcsSettings({ PLUGIN_BUCKET: "b", PLUGIN_JSON_KEY: value }), capture().log),
      InvalidSettingsError,
    );
    assertStringIncludes(err.message, expected);
    assertStringIncludes(err.message, "PLUGIN_JSON_KEY");
    assert(!err.message.includes("MIIsecret"), "the key content is in the message");
  }
});

Deno.test({
  name: "gcs: a JSON key Google refuses is an AuthFailedError",
  ...opts,
  async fn() {
    const sts = await startGoogleSts();
    const other = await startGoogleSts();
    try {
      const forged = JSON.stringify({ ...JSON.parse(other.jsonKey()), token_uri: `${sts.url}/token` });
      const err = await assertRejects(
        () => createGcsBackend(gcsSettings({ PLUGIN_BUCKET: "b", PLUGIN_JSON_KEY: forged }), capture().log),
        AuthFailedError,
      );
      assertStringIncludes(err.message, "Invalid JWT Signature.");
      assertStringIncludes(err.message, "PLUGIN_JSON_KEY");
    } finally {
      await other.stop();
      await sts.stop();
    }
  },
});

Deno.test({
  name: "gcs: API key reaches storage on SDK and transfer requests",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    try {
      const { log, lines } = capture();
      const backend = await createGcsBackend(
        gcsSettings({ ...gcs.env, PLUGIN_API_KEY: "AIzaTestApiKey123" }),
        log,
      );
      await roundTrip(backend, "apikey/obj", seededBytes(1000, 1));
      await backend.delete("apikey/obj");
      const seen = await gcs.requests();
      assert(seen.length >= 5);
      for (const r of seen) assertEquals(r.apiKey, "AIzaTestApiKey123", `${r.method} ${r.path}`);
      assert(!lines.join("\n").includes("AIzaTestApiKey123"));
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: application default credentials from GOOGLE_APPLICATION_CREDENTIALS",
  ...opts,
  async fn() {
    const sts = await startGoogleSts();
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/adc.json`, sts.jsonKey());
      const auth = await resolveGcsAuth(gcsSettings({ PLUGIN_BUCKET: "b" }), capture().log, {
        env: { GOOGLE_APPLICATION_CREDENTIALS: `${dir}/adc.json` },
      });
      assertStringIncludes(auth.method, "application default credentials");
      assertEquals(await auth.headers(), { authorization: `Bearer ${sts.issued[0]}` });
    } finally {
      await Deno.remove(dir, { recursive: true });
      await sts.stop();
    }
  },
});

Deno.test({
  name: "gcs: no credentials at all is an error that lists what was tried (no unauthenticated fallback)",
  ...opts,
  async fn() {
    const home = await Deno.makeTempDir();
    try {
      const code = `
        import { createGcsBackend } from "./lib/storage/gcs/backend.ts";
        import { Logger } from "./lib/log.ts";
        import { loadSettings } from "./lib/settings.ts";
        const r = loadSettings([], { PLUGIN_REBUILD: "true", PLUGIN_BACKEND: "gcs", PLUGIN_BUCKET: "b",
          PLUGIN_ENDPOINT: "https://127.0.0.1:9" });
        try { await createGcsBackend(r.settings, new Logger({ sink: () => {} })); console.log("CONNECTED"); }
        catch (e) { console.log(e.name + ": " + e.message); }`;
      const env: Record<string, string> = {
        HOME: home,
        CLOUDSDK_CONFIG: home,
        METADATA_SERVER_DETECTION: "none",
        PATH: Deno.env.get("PATH") ?? "",
        DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`,
      };
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", code],
        env,
        clearEnv: true,
        cwd: new URL("..", import.meta.url).pathname,
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assertStringIncludes(text, "AuthFailedError");
      assertStringIncludes(text, "no GCS credentials: tried workload identity federation");
      assertStringIncludes(text, "PLUGIN_JSON_KEY");
      assertStringIncludes(text, "never falls back to unauthenticated access");
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name: "gcs: a missing bucket is a NotFoundError naming the bucket",
  ...opts,
  async fn() {
    const gcs = await startGcs({ buckets: ["exists"] });
    try {
      const err = await assertRejects(
        () => createGcsBackend(gcsSettings({ ...gcs.env, PLUGIN_BUCKET: "no-such-bucket" }), capture().log),
        NotFoundError,
      );
      assertStringIncludes(err.message, 'bucket "no-such-bucket" does not exist');
      assertStringIncludes(err.message, "PLUGIN_BUCKET");
      const ok = await createGcsBackend(gcsSettings({ ...gcs.env, PLUGIN_BUCKET: "exists" }), capture().log);
      assertEquals(await ok.stat("x"), null);
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: permission denied (403) is an AccessDeniedError naming the role; 401 an AuthFailedError",
  ...opts,
  async fn() {
    const gcs = await startGcs({ deny: { "token-403": 403, "token-401": 401 } });
    const auth = (token: string) =>
      tokenAuth(
        "test token",
        new RefreshingToken(() => Promise.resolve({ token, expiresAt: Date.now() + 3600e3 })),
      );
    try {
      const denied = new GcsBackend({
        bucket: "b",
        endpoint: gcs.endpoint,
        auth: auth("token-403"),
        retries: 0,
      });
      for (
        const op of [
          () => denied.probe(),
          () => denied.stat("x"),
          () => denied.put("x", streamOf(seededBytes(10)), {}),
        ]
      ) {
        const err = await assertRejects(op, AccessDeniedError);
        assertStringIncludes(err.message, "roles/storage.objectAdmin");
        assertStringIncludes(err.message, "does not have storage.objects.");
      }
      const rejected = new GcsBackend({
        bucket: "b",
        endpoint: gcs.endpoint,
        auth: auth("token-401"),
        retries: 0,
      });
      const err = await assertRejects(() => rejected.get("x"), AuthFailedError);
      assertStringIncludes(err.message, "Invalid Credentials");
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: an unreachable endpoint is an UnavailableError naming the endpoint",
  ...opts,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const backend = new GcsBackend({
      bucket: "b",
      endpoint: `http://127.0.0.1:${port}`,
      auth: noAuth,
      retries: 1,
      retryBaseMs: 10,
    });
    for (const op of [() => backend.probe(), () => backend.put("x", streamOf(seededBytes(10)), {})]) {
      const err = await assertRejects(op, UnavailableError);
      assertStringIncludes(err.message, `cannot reach GCS at http://127.0.0.1:${port}`);
      assertStringIncludes(err.message, "PLUGIN_ENDPOINT");
    }
  },
});

Deno.test("gcs: endpoint, encryption key and ACL settings are checked", async () => {
  await assertRejects(
    () =>
      createGcsBackend(
        gcsSettings({ PLUGIN_BUCKET: "b", PLUGIN_ENDPOINT: "storage.local:9199" }),
        capture().log,
      ),
    InvalidSettingsError,
    "is not a URL",
  );
  await assertRejects(
    () => createGcsBackend(gcsSettings({ PLUGIN_BUCKET: "", PLUGIN_BACKEND: "gcs" }), capture().log),
    InvalidSettingsError,
    "PLUGIN_BUCKET",
  );
  const bad = await assertRejects(
    () => Promise.resolve(parseEncryptionKey("too-short-secret", "PLUGIN_GCS_ENCRYPTION_KEY")),
    InvalidSettingsError,
    "PLUGIN_GCS_ENCRYPTION_KEY must be an AES-256 key",
  );
  assert(!bad.message.includes("too-short-secret"));
  assertEquals(parseEncryptionKey("0123456789abcdef0123456789abcdef", "k").length, 32);
  assertEquals(parseEncryptionKey(btoa("0123456789abcdef0123456789abcdef"), "k")[31], "f".charCodeAt(0));
  assertEquals(parseAcl("project-private", "a"), "projectPrivate");
  assertEquals(parseAcl("bucketOwnerFullControl", "a"), "bucketOwnerFullControl");
  assertEquals(parseAcl("", "a"), undefined);
  await assertRejects(
    () => Promise.resolve(parseAcl("everyone", "PLUGIN_GCS_ACL")),
    InvalidSettingsError,
    "PLUGIN_GCS_ACL",
  );
});

Deno.test({
  name: "gcs: customer-supplied key and predefined ACL are sent with uploads and downloads",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    try {
      const key = btoa("0123456789abcdef0123456789abcdef");
      const { log, lines } = capture();
      const backend = await createGcsBackend(
        gcsSettings({ ...gcs.env, PLUGIN_GCS_ENCRYPTION_KEY: key, PLUGIN_GCS_ACL: "project-private" }),
        log,
      );
      await roundTrip(backend, "csek/obj", seededBytes(5000, 8));
      const digest = new Uint8Array(
        await crypto.subtle.digest("SHA-256", new TextEncoder().encode("0123456789abcdef0123456789abcdef")),
      );
      const sha = btoa(String.fromCharCode(...digest));
      const seen = await gcs.requests();
      const start = seen.find((r) => r.method === "POST" && r.path.startsWith("/upload/"))!;
      assertEquals(start.query.predefinedAcl, "projectPrivate");
      assertEquals(start.encryptionKeySha256, sha);
      const download = seen.find((r) => r.path.startsWith("/download/"))!;
      assertEquals(download.encryptionKeySha256, sha);
      assert(!lines.join("\n").includes(key));
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: STORAGE_EMULATOR_HOST-style endpoint works without credentials (logged as such)",
  ...opts,
  async fn() {
    const gcs: GcsServer = await startGcs();
    try {
      const { log, lines } = capture();
      const backend = await createGcsBackend(gcsSettings(gcs.env), log);
      await roundTrip(backend, "anon/obj", seededBytes(100, 1));
      assertStringIncludes(lines.join("\n"), "none (plain-HTTP emulator endpoint)");
    } finally {
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: end to end through the CLI: save, delete the mount, restore",
  ...opts,
  async fn() {
    const { run } = await import("../main.ts");
    const gcs = await startGcs();
    const dir = await Deno.makeTempDir({ prefix: "ci-cache-gcs-e2e-" });
    const mount = `${dir}/cache`;
    try {
      await Deno.mkdir(`${mount}/sub`, { recursive: true });
      const big = seededBytes(3 * 1024 * KiB + 17, 21);
      await Deno.writeFile(`${mount}/sub/big.bin`, big);
      await Deno.writeTextFile(`${mount}/hello.txt`, "hello from gcs");
      const logs: string[] = [];
      const env = {
        ...gcs.env,
        PLUGIN_MOUNT: mount,
        PLUGIN_CACHE_KEY: "k",
        PLUGIN_ARCHIVE_FORMAT: "zstd",
        PLUGIN_PART_SIZE_MB: "1",
      };
      assertEquals(await run([], { ...env, PLUGIN_REBUILD: "true" }, { sink: (l) => logs.push(l) }), 0);
      await Deno.remove(mount, { recursive: true });
      assertEquals(await run([], { ...env, PLUGIN_RESTORE: "true" }, { sink: (l) => logs.push(l) }), 0);
      assertEquals(await Deno.readTextFile(`${mount}/hello.txt`), "hello from gcs");
      const got = await Deno.readFile(`${mount}/sub/big.bin`);
      assertEquals(got.length, big.length);
      assert(got.every((b, i) => b === big[i]), "restored bytes differ");
      const objects = (await gcs.requests()).filter((r) =>
        r.method === "POST" && r.path.startsWith("/upload/")
      );
      assertEquals(objects.length, 1, "one upload session for one mount");
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await gcs.stop();
    }
  },
});

Deno.test({
  name: "gcs: a chunk that fails with 503 is resumed from the offset GCS reports",
  ...opts,
  async fn() {
    const gcs = await startGcs();
    let chunkPuts = 0;
    let statusQueries = 0;
    // A proxy in front of the emulator that answers the second chunk with 503 once, as a GCS frontend may.
    const proxy = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      const url = new URL(req.url);
      const range = req.headers.get("content-range") ?? "";
      if (req.method === "PUT" && range === "bytes */*") statusQueries++;
      if (req.method === "PUT" && /^bytes \d/.test(range) && ++chunkPuts === 2) {
        await req.arrayBuffer();
        return new Response('{"error":{"code":503,"message":"Backend Error"}}', { status: 503 });
      }
      const body = req.body ? await req.arrayBuffer() : undefined;
      const res = await fetch(`${gcs.endpoint}${url.pathname}${url.search}`, {
        method: req.method,
        headers: req.headers,
        body,
        redirect: "manual",
      });
      const headers = new Headers(res.headers);
      const location = headers.get("location");
      if (location) {
        headers.set("location", location.replace(gcs.endpoint, `http://127.0.0.1:${proxy.addr.port}`));
      }
      return new Response(res.status === 204 ? null : await res.arrayBuffer(), {
        status: res.status,
        headers,
      });
    });
    try {
      const backend = new GcsBackend({
        bucket: "b",
        endpoint: `http://127.0.0.1:${proxy.addr.port}`,
        auth: noAuth,
        partSize: 256 * KiB,
        retryBaseMs: 10,
      });
      await roundTrip(backend, "flaky/obj", seededBytes(900 * KiB, 4));
      assertEquals(statusQueries, 1, "the upload asked GCS how much it has after the 503");
      assertEquals(chunkPuts, 5, "4 chunks plus one resend");
    } finally {
      await proxy.shutdown();
      await gcs.stop();
    }
  },
});
