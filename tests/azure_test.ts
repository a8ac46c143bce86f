/**
 * Tests of the azure backend against a real Azurite on 127.0.0.1
 * (`scripts/servers/azurite.ts`, one per test): the shared conformance
 * suite, credential selection, each clear error, retries and idle timeouts
 * (through a small fault-injecting HTTP proxy in front of Azurite), the
 * commit guard, bounded download read-ahead, and a CLI save + restore.
 * The OAuth/OIDC paths need HTTPS and a trusted test CA, so they run in
 * subprocesses in `azure_oauth_test.ts`.
 *
 * @module
 */
import { backendConformance, readAll, sameBytes, seededBytes, streamOf } from "./backend_conformance.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import {
  AccountSASPermissions,
  BlobServiceClient,
  generateAccountSASQueryParameters,
  StorageSharedKeyCredential,
} from "../lib/deps/azure_storage_blob.ts";
import {
  AzureBackend,
  type AzureBackendOptions,
  blockSizeAt,
  blockSizeFor,
  connectAzure,
  createAzureBackend,
} from "../lib/storage/azure/backend.ts";
import { PIPELINE_OPTIONS } from "../lib/storage/azure/auth.ts";
import { FetchAzureBackend } from "../lib/storage/azure/fetch_backend.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  InvalidSettingsError,
  NotFoundError,
  StorageError,
  TooLargeError,
  UnavailableError,
} from "../lib/storage/backend.ts";
import { Logger } from "../lib/log.ts";
import type { Settings } from "../lib/settings.ts";
import { type AzuriteServer, startAzurite } from "../scripts/servers/azurite.ts";
import { run } from "../main.ts";

const MiB = 1024 * 1024;
const OPTS = { sanitizeOps: false, sanitizeResources: false };

async function withAzurite(fn: (a: AzuriteServer) => Promise<void>): Promise<void> {
  const a = await startAzurite();
  try {
    await fn(a);
  } finally {
    await a.stop();
  }
}

function sharedKeyClient(a: AzuriteServer, url = a.url, key = a.accountKey, account = a.accountName) {
  return new BlobServiceClient(url, new StorageSharedKeyCredential(account, key), PIPELINE_OPTIONS);
}

function backendFor(a: AzuriteServer, extra: Partial<AzureBackendOptions> = {}): AzureBackend {
  return new AzureBackend({
    client: sharedKeyClient(a),
    container: "cicache",
    partSize: 1 * MiB,
    concurrency: 3,
    listPageSize: 5,
    retryDelayMs: 10,
    ...extra,
  });
}

/** An account SAS for the dev account with the given permissions (e.g. "rl"). */
function sas(a: AzuriteServer, permissions: string, expiresInSeconds = 3600): string {
  return generateAccountSASQueryParameters({
    expiresOn: new Date(Date.now() + expiresInSeconds * 1000),
    permissions: AccountSASPermissions.parse(permissions),
    resourceTypes: "sco",
    services: "b",
  }, new StorageSharedKeyCredential(a.accountName, a.accountKey)).toString();
}

/** Settings as the CLI parses them from this environment. */
function settingsOf(env: Record<string, string>): Settings {
  return settingsFrom({
    PLUGIN_PART_SIZE_MB: "1",
    AZURE_BLOB_MAX_RETRY_REQUESTS: "1",
    ...env,
  });
}

/** Message, causes and log lines, to check what a user would see. */
function seen(err: unknown, lines: string[] = []): string {
  const parts = [...lines];
  let cur = err;
  for (let i = 0; i < 5 && cur instanceof Error; i++) {
    parts.push(cur.message);
    cur = cur.cause;
  }
  return parts.join("\n");
}

/** What the fault proxy should do with one request. */
type Fault = "pass" | "503" | "429" | "stall" | "drop" | "truncate";

/**
 * A small HTTP proxy in front of Azurite that injects faults: `decide` picks,
 * per request, whether to forward it, answer 503/429, or hang until the
 * client gives up, or lose a request (answer 201 without forwarding it) or
 * forward it with the last KiB of its body cut off. Bodies are buffered
 * (tests send small ones).
 */
function faultProxy(a: AzuriteServer, decide: (req: Request, n: number) => Fault) {
  const seenRequests: { method: string; url: string; range?: string; fault: Fault }[] = [];
  const stopping = new AbortController();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const fault = decide(req, seenRequests.length);
    const url = new URL(req.url);
    seenRequests.push({
      method: req.method,
      url: url.pathname + url.search,
      range: req.headers.get("x-ms-range") ?? undefined,
      fault,
    });
    if (fault === "503" || fault === "429") {
      await req.body?.cancel();
      const code = fault === "503" ? "ServerBusy" : "TooManyRequests";
      return new Response(`<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code></Error>`, {
        status: Number(fault),
        headers: { "x-ms-error-code": code, "content-type": "application/xml" },
      });
    }
    if (fault === "stall") {
      // Hang until the client gives up (or the proxy stops: a client that never reads our
      // answer must not keep the shutdown waiting).
      await new Promise<void>((resolve) => {
        req.signal.addEventListener("abort", () => resolve());
        stopping.signal.addEventListener("abort", () => resolve());
      });
      return new Response(null, { status: 500 });
    }
    if (fault === "drop") {
      await req.body?.cancel();
      return new Response(null, { status: 201 });
    }
    let body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
    const headers = new Headers(req.headers);
    headers.delete("host");
    if (fault === "truncate" && body) {
      body = body.slice(0, Math.max(0, body.byteLength - 1024));
      headers.delete("content-length");
    }
    return await fetch(`http://127.0.0.1:${a.port}${url.pathname}${url.search}`, {
      method: req.method,
      headers,
      body,
    });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/${a.accountName}`,
    requests: seenRequests,
    stop: () => {
      stopping.abort();
      return server.shutdown();
    },
  };
}

// ── conformance ─────────────────────────────────────────────────────────────
let conformanceServer: AzuriteServer | undefined;
backendConformance("azure", async () => {
  conformanceServer = await startAzurite();
  const backend = backendFor(conformanceServer, { container: "conformance" });
  await backend.ensureContainer();
  return { backend, teardown: () => conformanceServer!.stop() };
});

// Shared key: every request over fetch with our Shared Key signing (fetch_backend.ts, no SDK).
let restServer: AzuriteServer | undefined;
backendConformance("azure (fetch path, shared key)", async () => {
  restServer = await startAzurite();
  const backend = await createAzureBackend(
    settingsOf({ ...restServer.env, PLUGIN_CONTAINER: "conformance-rest" }),
    new Logger({ level: "error" }),
    { listPageSize: 7 },
  );
  return { backend, teardown: () => restServer!.stop() };
});

// ── settings and credential selection (no server needed) ────────────────────
Deno.test("azure: no usable credentials is one InvalidSettingsError listing the three ways", async () => {
  const err = await assertRejects(
    () => connectAzure(settingsOf({ PLUGIN_BACKEND: "azure", PLUGIN_CONTAINER: "c" }), new Logger()),
    InvalidSettingsError,
  );
  for (const need of ["PLUGIN_AZURE_OIDC_TOKEN", "PLUGIN_AZURE_TENANT_ID", "PLUGIN_AZURE_CLIENT_SECRET"]) {
    assertStringIncludes(err.message, need);
  }
  assertStringIncludes(err.message, "PLUGIN_ACCOUNT_NAME and PLUGIN_ACCOUNT_KEY");

  const token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig";
  const partial = await assertRejects(
    () =>
      connectAzure(settingsOf({ PLUGIN_OIDC_TOKEN_ID: token, PLUGIN_ACCOUNT_NAME: "acct" }), new Logger()),
    InvalidSettingsError,
  );
  assertStringIncludes(partial.message, "an OIDC token is set (PLUGIN_OIDC_TOKEN_ID)");
  assert(!partial.message.includes(token), "the token appears in the message");

  const noClient = await assertRejects(
    () =>
      connectAzure(
        settingsOf({
          PLUGIN_AZURE_OIDC_TOKEN: token,
          PLUGIN_AZURE_TENANT_ID: "t",
          PLUGIN_ACCOUNT_NAME: "acct",
        }),
        new Logger(),
      ),
    InvalidSettingsError,
  );
  assertStringIncludes(noClient.message, "PLUGIN_AZURE_CLIENT_ID is not");

  const noFile = await assertRejects(
    () =>
      connectAzure(
        settingsOf({
          AZURE_FEDERATED_TOKEN_FILE: "/nonexistent/ci-cache/token",
          AZURE_TENANT_ID: "t",
          AZURE_CLIENT_ID: "c",
          PLUGIN_ACCOUNT_NAME: "acct",
        }),
        new Logger(),
      ),
    InvalidSettingsError,
  );
  assertStringIncludes(noFile.message, "/nonexistent/ci-cache/token");

  const noAccount = await assertRejects(
    () => connectAzure(settingsOf({ PLUGIN_ACCOUNT_KEY: "a2V5" }), new Logger()),
    InvalidSettingsError,
  );
  assertStringIncludes(noAccount.message, "PLUGIN_ACCOUNT_NAME");
});

Deno.test("azure: credential priority (OIDC, service principal, shared key, SAS, connection string)", async () => {
  const base = { PLUGIN_ACCOUNT_NAME: "acct", PLUGIN_CONTAINER: "c" };
  const token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig";
  const sp = {
    PLUGIN_AZURE_TENANT_ID: "t",
    PLUGIN_AZURE_CLIENT_ID: "c",
    PLUGIN_AZURE_CLIENT_SECRET: "s3cr3t-value",
  };
  const key = { PLUGIN_ACCOUNT_KEY: btoa("0123456789abcdef") };
  const sasEnv = { PLUGIN_SAS_TOKEN: "?sv=2024-01-01&sig=abc" };
  const cs = {
    PLUGIN_AZURE_CONNECTION_STRING: "DefaultEndpointsProtocol=https;AccountName=csacct;AccountKey=" +
      btoa("0123456789abcdef") + ";EndpointSuffix=core.windows.net",
  };
  const method = async (env: Record<string, string>) =>
    (await connectAzure(settingsOf(env), new Logger())).auth.method;
  assertEquals(await method({ ...base, ...sp, ...key, PLUGIN_AZURE_OIDC_TOKEN: token }), "oidc");
  assertEquals(await method({ ...base, ...sp, ...key, ...sasEnv, ...cs }), "service-principal");
  assertEquals(await method({ ...base, ...key, ...sasEnv, ...cs }), "shared-key");
  assertEquals(await method({ ...base, ...sasEnv, ...cs }), "sas");
  assertEquals(await method({ ...cs }), "connection-string");

  const oidc = await connectAzure(
    settingsOf({ ...base, ...sp, PLUGIN_AZURE_OIDC_TOKEN: token }),
    new Logger(),
  );
  assertStringIncludes(oidc.auth.description, "PLUGIN_AZURE_OIDC_TOKEN");
  assertEquals(oidc.auth.serviceUrl, "https://acct.blob.core.windows.net");
  const gov = await connectAzure(
    settingsOf({ ...base, ...key, AZURE_BLOB_STORAGE_URL: "blob.core.usgovcloudapi.net" }),
    new Logger(),
  );
  assertEquals(gov.auth.serviceUrl, "https://acct.blob.core.usgovcloudapi.net");
  const ep = await connectAzure(
    settingsOf({ ...key, PLUGIN_ACCOUNT_NAME: "acct", AZURE_BLOB_ENDPOINT: "https://private.example:8443/" }),
    new Logger(),
  );
  assertEquals(ep.auth.serviceUrl, "https://private.example:8443");
  assertEquals(ep.auth.serviceUrlSource, "AZURE_BLOB_ENDPOINT");
  const cstr = await connectAzure(settingsOf(cs), new Logger());
  assertEquals(cstr.auth.accountName, "csacct");
  assert(!cstr.auth.description.includes("AccountKey"), "the connection string leaks into the description");

  await assertRejects(
    () =>
      connectAzure(
        settingsOf({ ...base, ...sp, AZURE_AUTHORITY_HOST: "http://login.example" }),
        new Logger(),
      ),
    InvalidSettingsError,
    "AZURE_AUTHORITY_HOST",
  );
  await assertRejects(
    () => connectAzure(settingsOf({ ...base, ...key, PLUGIN_ENDPOINT: "ftp://x" }), new Logger()),
    InvalidSettingsError,
    "PLUGIN_ENDPOINT",
  );
});

Deno.test("azure: container name from the setting, else the key template's first segment (Go plugin)", async () => {
  const { containerName } = await import("../lib/storage/azure/backend.ts");
  assertEquals(containerName(settingsOf({ PLUGIN_CONTAINER: " Builds " })), "builds");
  assertEquals(containerName(settingsOf({ PLUGIN_CACHE_KEY: "/MyRepo/{{ .Commit.Branch }}" })), "myrepo");
  const none = assertThrowsSync(() => containerName(settingsOf({})));
  assert(none instanceof InvalidSettingsError && none.message.includes("PLUGIN_CONTAINER"), String(none));
  const bad = assertThrowsSync(() => containerName(settingsOf({ PLUGIN_CACHE_KEY: "{{ .Repo.Name }}/x" })));
  assert(bad instanceof InvalidSettingsError, String(bad));
  assertStringIncludes(bad.message, "PLUGIN_CACHE_KEY");
});

function assertThrowsSync(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a throw");
}

// ── against Azurite ─────────────────────────────────────────────────────────
Deno.test({
  name:
    "azure: createAzureBackend with a shared key logs the method once, creates the container, hides the key",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const { log, lines } = capture();
      const backend = await createAzureBackend(
        settingsOf({ ...a.env, PLUGIN_CONTAINER: "fresh-container" }),
        log,
      );
      const info = lines.filter((l) => l.includes('msg="azure backend"'));
      assertEquals(info.length, 1);
      assertStringIncludes(info[0], "auth=shared-key");
      assertStringIncludes(info[0], "container=fresh-container");
      assert(!lines.join("\n").includes(a.accountKey), "the account key was logged");
      assert(
        await sharedKeyClient(a).getContainerClient("fresh-container").exists(),
        "container not created",
      );
      const data = seededBytes(2 * MiB + 3, 5);
      await backend.put("k/m", streamOf(data), { cicache_root: "/home/jörg/projekt" });
      assertEquals((await backend.stat("k/m"))?.meta.cicache_root, "/home/jörg/projekt");
      assertEquals((await readAll(await backend.get("k/m"))).length, data.length);
      // Opening again (container exists now) is fine.
      await createAzureBackend(settingsOf({ ...a.env, PLUGIN_CONTAINER: "fresh-container" }), new Logger());
    }),
});

Deno.test({
  name: "azure: SAS token and connection string work; a read-only SAS uses an existing container",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const full = await createAzureBackend(
        settingsOf({
          PLUGIN_ENDPOINT: a.url,
          PLUGIN_SAS_TOKEN: "?" + sas(a, "racwdl"),
          PLUGIN_CONTAINER: "viasas",
        }),
        new Logger(),
      );
      assertEquals((full as AzureBackend).auth.method, "sas");
      await full.put("x/y", streamOf(new TextEncoder().encode("via sas")), {});
      const cs = await createAzureBackend(
        settingsOf({ PLUGIN_AZURE_CONNECTION_STRING: a.connectionString, PLUGIN_CONTAINER: "viasas" }),
        new Logger(),
      );
      assertEquals((cs as AzureBackend).auth.method, "connection-string");
      assertEquals(new TextDecoder().decode(await readAll(await cs.get("x/y"))), "via sas");

      // May not create containers, but may read and list an existing one: still works (Go plugin behaviour).
      const ro = await createAzureBackend(
        settingsOf({ PLUGIN_ENDPOINT: a.url, PLUGIN_SAS_TOKEN: sas(a, "rl"), PLUGIN_CONTAINER: "viasas" }),
        new Logger(),
      );
      assertEquals(new TextDecoder().decode(await readAll(await ro.get("x/y"))), "via sas");
      const denied = await assertRejects(() => ro.put("x/z", streamOf(new TextEncoder().encode("no")), {}));
      assert(denied instanceof AccessDeniedError, `expected AccessDeniedError, got ${denied}`);
      assertStringIncludes(denied.message, "sp=racwdl");
      assertEquals(await ro.stat("x/z"), null);

      const missing = await assertRejects(() =>
        createAzureBackend(
          settingsOf({
            PLUGIN_ENDPOINT: a.url,
            PLUGIN_SAS_TOKEN: sas(a, "rl"),
            PLUGIN_CONTAINER: "not-there",
          }),
          new Logger(),
        )
      );
      assert(missing instanceof NotFoundError, `expected NotFoundError, got ${missing}`);
      assertStringIncludes(missing.message, 'container "not-there" does not exist');
      assertStringIncludes(missing.message, "PLUGIN_CONTAINER");
    }),
});

Deno.test({
  name: "azure: wrong account key, expired SAS and unknown account fail clearly, without secrets",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const wrongKey = btoa("this is not the account key!");
      const { log, lines } = capture();
      const err = await assertRejects(() =>
        createAzureBackend(settingsOf({ ...a.env, PLUGIN_ACCOUNT_KEY: wrongKey }), log)
      );
      assert(err instanceof AuthFailedError, `expected AuthFailedError, got ${err}`);
      assertStringIncludes(err.message, "rejected the account key");
      assertStringIncludes(err.message, "PLUGIN_ACCOUNT_KEY");
      assert(!seen(err, lines).includes(wrongKey), "the key appears in the error or log");

      const expiredSas = sas(a, "racwdl", -3600);
      const expired = await assertRejects(() =>
        createAzureBackend(
          settingsOf({ PLUGIN_ENDPOINT: a.url, PLUGIN_SAS_TOKEN: expiredSas, PLUGIN_CONTAINER: "cone" }),
          log,
        )
      );
      assert(expired instanceof AuthFailedError, `expected AuthFailedError, got ${expired}`);
      assertStringIncludes(expired.message, "rejected the SAS token");
      assert(!seen(expired).includes(expiredSas.split("sig=")[1]), "the SAS signature appears in the error");

      const account = await assertRejects(() =>
        createAzureBackend(
          settingsOf({
            ...a.env,
            PLUGIN_ENDPOINT: a.url.replace(a.accountName, "nosuchaccount"),
            PLUGIN_ACCOUNT_NAME: "nosuchaccount",
          }),
          new Logger(),
        )
      );
      assert(account instanceof NotFoundError, `expected NotFoundError, got ${account}`);
      assertStringIncludes(account.message, 'storage account "nosuchaccount" not found');
    }),
});

Deno.test({
  name: "azure: an identity without the data role is told to get Storage Blob Data Contributor",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      await backendFor(a).ensureContainer();
      // Azurite has no RBAC; a read-only SAS yields the same 403 AuthorizationPermissionMismatch that a
      // token identity without a data role gets from Azure.
      const backend = new AzureBackend({
        client: new BlobServiceClient(`${a.url}?${sas(a, "rl")}`, undefined, PIPELINE_OPTIONS),
        container: "cicache",
        auth: {
          method: "oidc",
          description: "test",
          accountName: a.accountName,
          serviceUrl: a.url,
          serviceUrlSource: "PLUGIN_ENDPOINT",
          secretSource: "PLUGIN_AZURE_OIDC_TOKEN",
          tenantId: "tenant-1",
          clientId: "client-1",
        },
      });
      const err = await assertRejects(() => backend.put("k/m", streamOf(new TextEncoder().encode("x")), {}));
      assert(err instanceof AccessDeniedError, `expected AccessDeniedError, got ${err}`);
      assertStringIncludes(err.message, "Storage Blob Data Contributor");
      assertStringIncludes(err.message, "client-1");
      const del = await assertRejects(() => backend.delete("k/m"));
      assert(del instanceof AccessDeniedError, `expected AccessDeniedError, got ${del}`);
      assertStringIncludes(del.message, "may not delete blobs");
    }),
});

Deno.test({
  name:
    "azure: an unreachable endpoint is UnavailableError naming the endpoint, after the configured retries",
  ...OPTS,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const { log, lines } = capture();
    const url = `http://127.0.0.1:${port}/devstoreaccount1`;
    const settings = settingsOf({
      PLUGIN_ENDPOINT: url,
      PLUGIN_ACCOUNT_NAME: "devstoreaccount1",
      PLUGIN_ACCOUNT_KEY: btoa("k"),
      PLUGIN_CONTAINER: "c",
      AZURE_BLOB_MAX_RETRY_REQUESTS: "2",
    });
    const backend = new AzureBackend({
      ...(await connectAzure(settings, log)),
      container: "c",
      maxRetries: 2,
      retryDelayMs: 5,
      log,
    });
    const err = await assertRejects(() => backend.ensureContainer());
    assert(err instanceof UnavailableError, `expected UnavailableError, got ${err}`);
    assertStringIncludes(err.message, url);
    assertStringIncludes(err.message, "(from PLUGIN_ENDPOINT)");
    assertStringIncludes(err.message, "3 attempts");
    assertEquals(lines.filter((l) => l.includes("retrying")).length, 2);

    // An account whose host name does not resolve: named, never retried blindly.
    const dns = new AzureBackend({
      ...(await connectAzure(
        settingsOf({
          PLUGIN_ACCOUNT_NAME: "nosuchacct",
          PLUGIN_ACCOUNT_KEY: btoa("k"),
          AZURE_BLOB_STORAGE_URL: "blob.invalid",
        }),
        log,
      )),
      container: "c",
      retryDelayMs: 5,
    });
    const dnsErr = await assertRejects(() => dns.ensureContainer());
    assert(dnsErr instanceof NotFoundError || dnsErr instanceof UnavailableError, String(dnsErr));
    assertStringIncludes(dnsErr.message, "nosuchacct.blob.invalid");
  },
});

Deno.test({
  name: "azure: 503/429 are retried with backoff up to AZURE_BLOB_MAX_RETRY_REQUESTS, then Unavailable",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      await backendFor(a).ensureContainer();
      let failures = 0;
      const proxy = faultProxy(a, () => failures-- > 0 ? (failures % 2 ? "503" : "429") : "pass");
      try {
        const { log, lines } = capture();
        const through = (maxRetries: number) =>
          backendFor(a, { client: sharedKeyClient(a, proxy.url), maxRetries, log });
        failures = 2;
        const data = seededBytes(2 * MiB + 10, 11);
        await through(2).put("retry/obj", streamOf(data), {});
        assertEquals((await readAll(await backendFor(a).get("retry/obj"))).length, data.length);
        assertEquals(proxy.requests.filter((r) => r.fault !== "pass").length, 2);
        assertEquals(lines.filter((l) => l.includes("retrying")).length, 2);

        failures = 3;
        const err = await assertRejects(() => through(2).stat("retry/obj"));
        assert(err instanceof UnavailableError, `expected UnavailableError, got ${err}`);
        assertStringIncludes(err.message, "AZURE_BLOB_MAX_RETRY_REQUESTS");
        assertStringIncludes(err.message, "3 attempts");
      } finally {
        await proxy.stop();
      }
    }),
});

Deno.test({
  name: "azure: a stalled request hits the idle timeout and is retried; the timeout never caps a transfer",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const setup = backendFor(a);
      await setup.ensureContainer();
      const data = seededBytes(3 * MiB + 1, 12);
      await setup.put("stall/obj", streamOf(data), {});
      let stalls = 0;
      const proxy = faultProxy(a, (req) => {
        const isRange = req.method === "GET" && req.headers.has("x-ms-range");
        const isBlock = req.method === "PUT" && new URL(req.url).searchParams.get("comp") === "block";
        return (isRange || isBlock) && stalls-- > 0 ? "stall" : "pass";
      });
      try {
        const backend = backendFor(a, {
          client: sharedKeyClient(a, proxy.url),
          timeoutMs: 400,
          maxRetries: 2,
        });
        stalls = 1;
        const got = await readAll(await backend.get("stall/obj"));
        assertEquals(got.length, data.length);
        assert(got.every((v, i) => v === data[i]), "bytes differ after a retried range");
        stalls = 1;
        await backend.put("stall/up", streamOf(data), {});
        assertEquals((await setup.stat("stall/up"))?.size, data.length);
        assertEquals(proxy.requests.filter((r) => r.fault === "stall").length, 2);

        const impatient = backendFor(a, {
          client: sharedKeyClient(a, proxy.url),
          timeoutMs: 300,
          maxRetries: 0,
        });
        stalls = 1;
        const err = await assertRejects(async () => await readAll(await impatient.get("stall/obj")));
        assert(err instanceof UnavailableError, `expected UnavailableError, got ${err}`);
        assertStringIncludes(err.message, "PLUGIN_BACKEND_OPERATION_TIMEOUT");
      } finally {
        await proxy.stop();
      }
    }),
});

Deno.test("azure: the block size fits PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB and doubles as blocks run out", () => {
  assertEquals(blockSizeFor(16 * MiB, 51200 * MiB), 16 * MiB);
  assertEquals(blockSizeFor(16 * MiB, 2_000_000 * MiB), 40 * MiB);
  assertEquals(blockSizeFor(16 * MiB, 1e9 * MiB), 4000 * MiB);
  assertEquals(blockSizeAt(0, 16 * MiB), 16 * MiB);
  assertEquals(blockSizeAt(24_999, 16 * MiB), 16 * MiB);
  assertEquals(blockSizeAt(25_000, 16 * MiB), 32 * MiB);
  assertEquals(blockSizeAt(37_500, 16 * MiB), 64 * MiB);
  assertEquals(blockSizeAt(49_999, 16 * MiB), 4000 * MiB);
  let capacity = 0;
  for (let i = 0; i < 50_000; i++) capacity += blockSizeAt(i, 16 * MiB);
  assert(capacity > 2 * 1024 ** 4, `16 MiB blocks should reach past 2 TiB, got ${capacity / 1024 ** 4} TiB`);
  const backend = new AzureBackend({
    client: new BlobServiceClient("http://127.0.0.1:1/devstoreaccount1"),
    container: "c",
    partSize: 16 * MiB,
    maxObjectSize: 2_000_000 * MiB,
  });
  assertEquals(backend.partSize, 40 * MiB);
});

Deno.test({
  name: "azure: blocks grow during a long upload; past the last block it is TooLargeError; nothing left",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      // 3 blocks starting at 1 MiB: 1 + 1 + 2 MiB.
      const backend = backendFor(a, { maxBlocks: 3 });
      await backend.ensureContainer();
      const data = seededBytes(4 * MiB, 1);
      await backend.put("big/fits", streamOf(data), {});
      assert(sameBytes(await readAll(await backend.get("big/fits")), data), "bytes differ");
      const list = await sharedKeyClient(a).getContainerClient("cicache").getBlockBlobClient("big/fits")
        .getBlockList("committed");
      assertEquals(list.committedBlocks?.map((b) => b.size), [1 * MiB, 1 * MiB, 2 * MiB]);
      const err = await assertRejects(() =>
        backend.put("big/obj", streamOf(seededBytes(4 * MiB + 1, 2)), {})
      );
      assert(err instanceof TooLargeError, `expected TooLargeError, got ${err}`);
      assertStringIncludes(err.message, "PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB");
      assertStringIncludes(err.message, "3 blocks starting at 1 MiB");
      assertStringIncludes(err.message, "4.0 MiB");
      assertEquals(await backend.stat("big/obj"), null);
    }),
});

Deno.test({
  name: "azure: a block lost or cut short on the way is detected; the block list is not committed",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const direct = backendFor(a);
      await direct.ensureContainer();
      await direct.put("guard/old", streamOf(new TextEncoder().encode("previous save")), {});
      let nthBlock = 0;
      let fault: Fault = "drop";
      const proxy = faultProxy(a, (req) => {
        const isBlock = req.method === "PUT" && new URL(req.url).searchParams.get("comp") === "block";
        return isBlock && nthBlock++ === 1 ? fault : "pass";
      });
      try {
        // A Put Block answered 201 but never stored (a lost block).
        const lossy = backendFor(a, { client: sharedKeyClient(a, proxy.url) });
        const err = await assertRejects(() => lossy.put("guard/old", streamOf(seededBytes(3 * MiB, 4)), {}));
        assert(err instanceof StorageError, `expected a StorageError, got ${err}`);
        // The proxy drops the second block to arrive; with blocks in flight together that may be any of them.
        assert(/block [012] of 3 is missing/.test(err.message), err.message);
        assertStringIncludes(err.message, "not committing");
        assertEquals(new TextDecoder().decode(await readAll(await direct.get("guard/old"))), "previous save");
        assertEquals(
          proxy.requests.some((r) => r.url.includes("comp=blocklist") && r.method === "PUT"),
          false,
        );

        // A block stored shorter than sent (SAS does not sign the length, so the service takes it).
        nthBlock = 0;
        fault = "truncate";
        const short = backendFor(a, {
          client: new BlobServiceClient(`${proxy.url}?${sas(a, "racwdl")}`, undefined, PIPELINE_OPTIONS),
        });
        const err2 = await assertRejects(() => short.put("guard/new", streamOf(seededBytes(3 * MiB, 5)), {}));
        assert(
          new RegExp(`block [012] of 3 is ${MiB - 1024} bytes instead of ${MiB}`).test(err2.message),
          err2.message,
        );
        assertEquals(await direct.stat("guard/new"), null);
      } finally {
        await proxy.stop();
      }
    }),
});

Deno.test({
  name: "azure (fetch path): a lost or short block is caught before the commit; stale blocks are swept",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const direct = await createAzureBackend(
        settingsOf({ ...a.env, PLUGIN_PART_SIZE_MB: "1" }),
        new Logger(),
      );
      assert(direct instanceof FetchAzureBackend, "a shared key should take the fetch path");
      await direct.put("fguard/old", streamOf(new TextEncoder().encode("previous save")), {});
      let nthBlock = 0;
      let fault: Fault = "drop";
      const proxy = faultProxy(a, (req) => {
        const isBlock = req.method === "PUT" && new URL(req.url).searchParams.get("comp") === "block";
        return isBlock && nthBlock++ === 1 ? fault : "pass";
      });
      try {
        // A Put Block answered 201 but never stored (a lost block), with the shared key over fetch.
        const lossy = await createAzureBackend(
          settingsOf({ ...a.env, PLUGIN_ENDPOINT: proxy.url, PLUGIN_PART_SIZE_MB: "1" }),
          new Logger({ level: "error" }),
        );
        const err = await assertRejects(() => lossy.put("fguard/old", streamOf(seededBytes(3 * MiB, 4)), {}));
        assert(err instanceof StorageError, `expected a StorageError, got ${err}`);
        // 1 MiB asked, 2 MiB blocks: grown so 50 000 blocks hold the default maximum size.
        // The proxy drops the second block to arrive; with both in flight that may be block 0.
        assert(/block [01] of 2 is missing/.test(err.message), err.message);
        assertEquals(
          new TextDecoder().decode(await readAll(await direct.get("fguard/old"))),
          "previous save",
        );
        assertEquals(
          proxy.requests.some((r) => r.url.includes("comp=blocklist") && r.method === "PUT"),
          false,
        );

        // A block stored shorter than sent (a SAS does not sign the length), with a SAS over fetch.
        nthBlock = 0;
        fault = "truncate";
        const short = await createAzureBackend(
          settingsOf({
            PLUGIN_BACKEND: "azure",
            PLUGIN_CONTAINER: a.env.PLUGIN_CONTAINER,
            PLUGIN_ENDPOINT: proxy.url,
            PLUGIN_SAS_TOKEN: "?" + sas(a, "racwdl"),
            PLUGIN_PART_SIZE_MB: "1",
          }),
          new Logger({ level: "error" }),
        );
        assert(short instanceof FetchAzureBackend, "a SAS should take the fetch path");
        const err2 = await assertRejects(() =>
          short.put("fguard/new", streamOf(seededBytes(3 * MiB, 5)), {})
        );
        assert(
          new RegExp(
            `block 1 of 2 is ${MiB - 1024} bytes instead of ${MiB}|block 0 of 2 is ${
              2 * MiB - 1024
            } bytes instead of ${2 * MiB}`,
          )
            .test(err2.message),
          err2.message,
        );
        assertEquals(await direct.stat("fguard/new"), null);

        // Those uncommitted blocks are what a killed save leaves: young ones stay, old ones go.
        assertEquals(await direct.sweepStale("fguard/"), 0);
        assertEquals(await direct.sweepStale("fguard/", 0), 1);
        const uncommitted = await sharedKeyClient(a).getContainerClient(a.env.PLUGIN_CONTAINER)
          .listBlobsFlat({ prefix: "fguard/", includeUncommitedBlobs: true }).byPage().next();
        assertEquals(uncommitted.value.segment.blobItems.map((b: { name: string }) => b.name), [
          "fguard/old",
        ]);
      } finally {
        await proxy.stop();
      }
    }),
});

Deno.test({
  name:
    "azure (fetch path): ranges are pinned to the stat's ETag; a blob replaced before the first byte restarts",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const backend = await createAzureBackend(
        settingsOf({ ...a.env, PLUGIN_PART_SIZE_MB: "1" }),
        new Logger(),
      );
      const first = seededBytes(3 * MiB + 5, 60);
      const second = seededBytes(3 * MiB + 9, 61);
      await backend.put("fpin/obj", streamOf(first), { cicache_format: "zstd" });
      assertEquals((await backend.stat("fpin/obj"))?.meta, { cicache_format: "zstd" });
      let got = await readAll(await backend.get("fpin/obj"));
      assert(sameBytes(got, first), "bytes differ");
      assertEquals((await backend.stat("fpin/obj"))?.size, first.length);
      await backend.put("fpin/obj", streamOf(second), {});
      got = await readAll(await backend.get("fpin/obj"));
      assert(sameBytes(got, second), "not the new blob, whole");
    }),
});

Deno.test({
  name: "azure: download reads ranges in order with bounded read-ahead; cancel stops; an overwrite is caught",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const setup = backendFor(a);
      await setup.ensureContainer();
      const data = seededBytes(8 * MiB + 5, 21);
      await setup.put("dl/obj", streamOf(data), {});
      const proxy = faultProxy(a, () => "pass");
      try {
        const backend = backendFor(a, { client: sharedKeyClient(a, proxy.url), concurrency: 2 });
        const reader = (await backend.get("dl/obj")).getReader();
        const first = await reader.read();
        assert(first.value !== undefined && first.value.length > 0, "no first chunk");
        assert(first.value.every((v, i) => v === data[i]), "first chunk differs");
        await new Promise((r) => setTimeout(r, 300)); // give any unbounded read-ahead a chance to show
        const ranges = () => proxy.requests.filter((r) => r.range !== undefined).length;
        assert(ranges() <= 3, `read ahead ${ranges()} ranges with concurrency 2`);
        await reader.cancel();
        const after = ranges();
        await new Promise((r) => setTimeout(r, 200));
        assertEquals(ranges(), after, "ranges were requested after cancel");
        const starts = proxy.requests.filter((r) => r.range).map((r) =>
          Number(/bytes=(\d+)-/.exec(r.range!)![1])
        );
        assertEquals(starts, starts.map((_, i) => i * MiB), "ranges not requested in order");

        // A save that replaces the object mid-download fails the download instead of mixing versions.
        const serial = backendFor(a, { concurrency: 1 });
        const r2 = (await serial.get("dl/obj")).getReader();
        await r2.read();
        await setup.put("dl/obj", streamOf(seededBytes(8 * MiB + 5, 22)), {});
        const err = await assertRejects(async () => {
          for (;;) if ((await r2.read()).done) break;
        });
        assert(err instanceof StorageError, `expected a StorageError, got ${err}`);
        assertStringIncludes(err.message, "changed while it was being read");
      } finally {
        await proxy.stop();
      }
    }),
});

Deno.test({
  name: "azure: access tier from PLUGIN_AZURE_ACCESS_TIER is applied to new blobs",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const backend = await createAzureBackend(
        settingsOf({ ...a.env, PLUGIN_AZURE_ACCESS_TIER: "Cool" }),
        new Logger(),
      );
      await backend.put("tier/small", streamOf(new TextEncoder().encode("s")), {});
      await backend.put("tier/blocks", streamOf(seededBytes(2 * MiB + 1, 3)), {});
      const container = sharedKeyClient(a).getContainerClient(a.env.PLUGIN_CONTAINER);
      assertEquals((await container.getBlobClient("tier/small").getProperties()).accessTier, "Cool");
      assertEquals((await container.getBlobClient("tier/blocks").getProperties()).accessTier, "Cool");
    }),
});

Deno.test({
  name: "azure: CLI save then restore through run() (zstd)",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const work = await Deno.makeTempDir({ prefix: "ci-cache-azure-cli-" });
      try {
        const mount = `${work}/deps`;
        await Deno.mkdir(`${mount}/nested/dir`, { recursive: true });
        await Deno.writeTextFile(`${mount}/one.txt`, "one");
        await Deno.writeFile(`${mount}/nested/dir/two.bin`, seededBytes(3 * MiB + 7, 8));
        const env = { ...a.env, PLUGIN_MOUNT: mount, PLUGIN_CACHE_KEY: "k", PLUGIN_ARCHIVE_FORMAT: "zstd" };
        const lines: string[] = [];
        assertEquals(await run([], { ...env, PLUGIN_REBUILD: "true" }, { sink: (l) => lines.push(l) }), 0);
        assert(!lines.join("\n").includes(a.accountKey), "the account key was logged");
        await Deno.remove(mount, { recursive: true });
        assertEquals(await run([], { ...env, PLUGIN_RESTORE: "true" }, { sink: (l) => lines.push(l) }), 0);
        assertEquals(await Deno.readTextFile(`${mount}/one.txt`), "one");
        const two = await Deno.readFile(`${mount}/nested/dir/two.bin`);
        const want = seededBytes(3 * MiB + 7, 8);
        assert(two.length === want.length && two.every((v, i) => v === want[i]), "restored bytes differ");
      } finally {
        await Deno.remove(work, { recursive: true });
      }
    }),
});

Deno.test({
  name: "azure (fetch path): blocks of 4 MiB and more go over node:http, short ones over fetch; bytes intact",
  ...OPTS,
  fn: () =>
    withAzurite(async (a) => {
      const backend = await createAzureBackend(
        settingsOf({ ...a.env, PLUGIN_PART_SIZE_MB: "4" }),
        new Logger({ level: "error" }),
      );
      assert(backend instanceof FetchAzureBackend, "a shared key should take the fetch path");
      // 3 full blocks of 4 MiB (node:http), then 1 MiB + 5 bytes (fetch); and a single 5 MiB Put Blob.
      const data = seededBytes(13 * MiB + 5, 31);
      await backend.put("big/obj", streamOf(data, MiB), { cicache_format: "tar" });
      assert(sameBytes(await readAll(await backend.get("big/obj")), data), "the blob's bytes differ");
      assertEquals((await backend.stat("big/obj"))?.meta.cicache_format, "tar");
      const single = seededBytes(4 * MiB, 32);
      await backend.put("big/single", streamOf(single, MiB), {});
      assert(sameBytes(await readAll(await backend.get("big/single")), single), "the single blob differs");
      await backend.close();
    }),
});
