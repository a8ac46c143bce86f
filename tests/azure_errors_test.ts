/**
 * Azure's documented refusals, each told apart: a refused key
 * (`AuthenticationFailed`), the firewall or a SAS that may not do this
 * (`AuthorizationFailure`), a missing data role
 * (`AuthorizationPermissionMismatch`), a container being deleted
 * (`ContainerBeingDeleted`), and the least-privilege container SAS
 * (`sr=c`). Azurite answers some of these differently from Azure, so
 * `scripts/servers/azure_front.ts` puts Azure's status, code and body in
 * front of a real Azurite; everything else is Azurite's.
 *
 * @module
 */
import { readAll, streamOf } from "./backend_conformance.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { settingsFrom } from "./support.ts";
import {
  BlobServiceClient,
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from "../lib/deps/azure_storage_blob.ts";
import { AzureBackend, createAzureBackend } from "../lib/storage/azure/backend.ts";
import { PIPELINE_OPTIONS } from "../lib/storage/azure/auth.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  NotFoundError,
  UnavailableError,
} from "../lib/storage/backend.ts";
import { Logger } from "../lib/log.ts";
import { type AzuriteServer, startAzurite } from "../scripts/servers/azurite.ts";
import { type AzureErrorCode, type AzureFront, startAzureFront } from "../scripts/servers/azure_front.ts";

const OPTS = { sanitizeOps: false, sanitizeResources: false };

async function withFront(
  decide: (req: Request, seen: readonly { method: string }[]) => AzureErrorCode | undefined,
  fn: (a: AzuriteServer, front: AzureFront) => Promise<void>,
): Promise<void> {
  const a = await startAzurite();
  const front = await startAzureFront(a.port, a.accountName, decide);
  try {
    await fn(a, front);
  } finally {
    await front.stop();
    await a.stop();
  }
}

const isCreate = (req: Request) =>
  req.method === "PUT" && new URL(req.url).searchParams.get("restype") === "container" &&
  !new URL(req.url).searchParams.has("comp");

function env(
  a: AzuriteServer,
  front: AzureFront,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ...a.env,
    PLUGIN_ENDPOINT: front.url,
    PLUGIN_PART_SIZE_MB: "1",
    AZURE_BLOB_MAX_RETRY_REQUESTS: "1",
    ...extra,
  };
}

function containerSas(a: AzuriteServer, container: string, permissions = "racwdl"): string {
  return generateBlobSASQueryParameters({
    containerName: container,
    permissions: ContainerSASPermissions.parse(permissions),
    expiresOn: new Date(Date.now() + 3600_000),
  }, new StorageSharedKeyCredential(a.accountName, a.accountKey)).toString();
}

async function makeContainer(a: AzuriteServer, name: string): Promise<void> {
  const client = new BlobServiceClient(
    a.url,
    new StorageSharedKeyCredential(a.accountName, a.accountKey),
    PIPELINE_OPTIONS,
  );
  await client.getContainerClient(name).createIfNotExists();
}

Deno.test({
  name: "azure errors: AuthenticationFailed (Azure's answer to a bad key) is 'rejected the account key'",
  ...OPTS,
  fn: () =>
    withFront(() => "AuthenticationFailed", async (a, front) => {
      const err = await assertRejects(() => createAzureBackend(settingsFrom(env(a, front)), new Logger()));
      assert(err instanceof AuthFailedError, `expected AuthFailedError, got ${err}`);
      assertStringIncludes(err.message, "rejected the account key");
      assertStringIncludes(err.message, "403 AuthenticationFailed");
      assertStringIncludes(err.message, "PLUGIN_ACCOUNT_KEY");
      // A refused key is not worth a listing probe: one request.
      assertEquals(front.requests.length, 1);
    }),
});

Deno.test({
  name: "azure errors: AuthorizationFailure (firewall) names the network rules and the SAS permissions",
  ...OPTS,
  fn: () =>
    withFront(() => "AuthorizationFailure", async (a, front) => {
      const err = await assertRejects(() => createAzureBackend(settingsFrom(env(a, front)), new Logger()));
      assert(err instanceof AccessDeniedError, `expected AccessDeniedError, got ${err}`);
      assertStringIncludes(err.message, "403 AuthorizationFailure");
      assertStringIncludes(err.message, "firewall and virtual network rules");
      assertStringIncludes(err.message, "sp=racwdl");
      assert(!err.message.includes("rejected the account key"), err.message);
      assert(!err.message.includes("Storage Blob Data Contributor"), err.message);
      // The refused create was followed by the listing probe, which told the same.
      assertEquals(front.requests.map((r) => r.method), ["PUT", "GET"]);

      // With a SAS, the message quotes its permissions.
      const sas = containerSas(a, "cicache", "rl");
      const viaSas = await assertRejects(() =>
        createAzureBackend(
          settingsFrom({
            PLUGIN_BACKEND: "azure",
            PLUGIN_ENDPOINT: front.url,
            PLUGIN_SAS_TOKEN: sas,
            PLUGIN_CONTAINER: "cicache",
            AZURE_BLOB_MAX_RETRY_REQUESTS: "0",
          }),
          new Logger(),
        )
      );
      assert(viaSas instanceof AccessDeniedError, `expected AccessDeniedError, got ${viaSas}`);
      assertStringIncludes(viaSas.message, "sp=rl and resource sr=c");
      assert(!viaSas.message.includes(sas.split("sig=")[1]), "the SAS signature is in the message");
    }),
});

Deno.test({
  name: "azure errors: AuthorizationPermissionMismatch (no data role) names Storage Blob Data Contributor",
  ...OPTS,
  fn: () =>
    withFront(
      (req) => req.method === "PUT" && !isCreate(req) ? "AuthorizationPermissionMismatch" : undefined,
      async (a, front) => {
        await makeContainer(a, "cicache");
        const backend = new AzureBackend({
          client: new BlobServiceClient(
            front.url,
            new StorageSharedKeyCredential(a.accountName, a.accountKey),
          ),
          container: "cicache",
          maxRetries: 0,
          auth: {
            method: "oidc",
            description: "test",
            accountName: a.accountName,
            serviceUrl: front.url,
            serviceUrlSource: "PLUGIN_ENDPOINT",
            secretSource: "PLUGIN_AZURE_OIDC_TOKEN",
            tenantId: "tenant-1",
            clientId: "client-1",
          },
        });
        await backend.ensureContainer();
        const err = await assertRejects(() =>
          backend.put("k/m", streamOf(new TextEncoder().encode("x")), {})
        );
        assert(err instanceof AccessDeniedError, `expected AccessDeniedError, got ${err}`);
        assertStringIncludes(err.message, "403 AuthorizationPermissionMismatch");
        assertStringIncludes(err.message, "Storage Blob Data Contributor");
        assert(!err.message.includes("firewall and virtual network rules"), err.message);
      },
    ),
});

Deno.test({
  name: "azure errors: a container SAS (sr=c) skips the create and works; a missing container says so",
  ...OPTS,
  fn: () =>
    withFront(() => undefined, async (a, front) => {
      await makeContainer(a, "scoped");
      const sas = containerSas(a, "scoped");
      const settings = settingsFrom({
        PLUGIN_BACKEND: "azure",
        PLUGIN_ENDPOINT: front.url,
        PLUGIN_SAS_TOKEN: sas,
        PLUGIN_CONTAINER: "scoped",
      });
      const backend = await createAzureBackend(settings, new Logger());
      assert(!front.requests.some((r) => r.query.get("restype") === "container" && r.method === "PUT"));
      await backend.put("k/m", streamOf(new TextEncoder().encode("scoped sas")), {});
      assertEquals(new TextDecoder().decode(await readAll(await backend.get("k/m"))), "scoped sas");

      const missing = await assertRejects(() =>
        createAzureBackend(
          settingsFrom({
            PLUGIN_BACKEND: "azure",
            PLUGIN_ENDPOINT: front.url,
            PLUGIN_SAS_TOKEN: containerSas(a, "absent"),
            PLUGIN_CONTAINER: "absent",
          }),
          new Logger(),
        )
      );
      assert(missing instanceof NotFoundError, `expected NotFoundError, got ${missing}`);
      assertStringIncludes(missing.message, 'container "absent" does not exist');
      assertStringIncludes(missing.message, "container SAS (sr=c) cannot create");
    }),
});

Deno.test({
  name: "azure errors: a create refused with AuthorizationFailure probes by listing and goes on",
  ...OPTS,
  fn: () =>
    withFront((req) => isCreate(req) ? "AuthorizationFailure" : undefined, async (a, front) => {
      await makeContainer(a, "cicache");
      const backend = await createAzureBackend(settingsFrom(env(a, front)), new Logger());
      await backend.put("k/m", streamOf(new TextEncoder().encode("after probe")), {});
      assertEquals(new TextDecoder().decode(await readAll(await backend.get("k/m"))), "after probe");
      assertEquals(front.requests.slice(0, 2).map((r) => [r.method, r.answer]), [
        ["PUT", "AuthorizationFailure"],
        ["GET", "forwarded"],
      ]);
    }),
});

Deno.test({
  name: "azure errors: ContainerBeingDeleted is waited out with backoff, then created",
  ...OPTS,
  fn: () => {
    let refusals = 0;
    return withFront(
      (req) => isCreate(req) && refusals++ < 2 ? "ContainerBeingDeleted" : undefined,
      async (a, front) => {
        const started = Date.now();
        const backend = await createAzureBackend(settingsFrom(env(a, front)), new Logger());
        assert(Date.now() - started < 60_000);
        assertEquals(front.requests.filter((r) => r.method === "PUT").map((r) => r.answer), [
          "ContainerBeingDeleted",
          "ContainerBeingDeleted",
          "forwarded",
        ]);
        await backend.put("k/m", streamOf(new TextEncoder().encode("recreated")), {});
      },
    );
  },
});

Deno.test({
  name: "azure errors: a container still being deleted at the operation timeout is a clear UnavailableError",
  ...OPTS,
  fn: () =>
    withFront((req) => isCreate(req) ? "ContainerBeingDeleted" : undefined, async (a, front) => {
      const err = await assertRejects(() =>
        createAzureBackend(
          settingsFrom(env(a, front, { PLUGIN_BACKEND_OPERATION_TIMEOUT: "3s" })),
          new Logger(),
        )
      );
      assert(err instanceof UnavailableError, `expected UnavailableError, got ${err}`);
      assertStringIncludes(err.message, 'container "cicache"');
      assertStringIncludes(err.message, "is being deleted");
      assertStringIncludes(err.message, "PLUGIN_BACKEND_OPERATION_TIMEOUT");
      assert(front.requests.filter((r) => r.method === "PUT").length >= 2, "did not wait and try again");
    }),
});
