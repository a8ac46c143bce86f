/**
 * The real services, when someone has them (`deno task test:cloud`): the
 * backend conformance suite and the error cases of the emulator tests,
 * against real Azure Blob Storage (shared key, service principal, OIDC via
 * a federated token file, container SAS), AWS S3 and Google Cloud Storage.
 *
 * Each test runs only when its credentials are in the environment and is
 * reported as ignored otherwise (never as passed). Everything a test makes
 * (objects under a random prefix, containers named `cicache-cloud-<run>-…`)
 * is removed at its end. Variables (see docs/cloud-tests.md):
 *
 * - Azure: `CICACHE_CLOUD_AZURE_ACCOUNT`, and per method
 *   `CICACHE_CLOUD_AZURE_ACCOUNT_KEY` (shared key; also container SAS and
 *   the error cases, signed from it);
 *   `CICACHE_CLOUD_AZURE_TENANT_ID` + `CICACHE_CLOUD_AZURE_CLIENT_ID` +
 *   `CICACHE_CLOUD_AZURE_CLIENT_SECRET` (service principal);
 *   `CICACHE_CLOUD_AZURE_TENANT_ID` + `CICACHE_CLOUD_AZURE_OIDC_CLIENT_ID`
 *   (default: the client id) + `CICACHE_CLOUD_AZURE_FEDERATED_TOKEN_FILE`
 *   (OIDC); optional `CICACHE_CLOUD_AZURE_FIREWALLED_ACCOUNT` +
 *   `CICACHE_CLOUD_AZURE_FIREWALLED_KEY` (an account whose firewall refuses
 *   this runner); optional `CICACHE_CLOUD_AZURE_ENDPOINT` (sovereign cloud, or
 *   Azurite to check the suite itself).
 * - AWS S3: `CICACHE_CLOUD_S3_BUCKET`, `CICACHE_CLOUD_S3_REGION`, and
 *   `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`, as
 *   set by aws-actions/configure-aws-credentials with OIDC); optional
 *   `CICACHE_CLOUD_S3_ENDPOINT`.
 * - GCS: `CICACHE_CLOUD_GCS_BUCKET`, and either
 *   `CICACHE_CLOUD_GCS_JSON_KEY` (service account key, JSON text or a path)
 *   or workload identity federation: `CICACHE_CLOUD_GCS_OIDC_TOKEN`,
 *   `CICACHE_CLOUD_GCS_PROJECT_NUMBER`, `CICACHE_CLOUD_GCS_POOL_ID`,
 *   `CICACHE_CLOUD_GCS_PROVIDER_ID`, `CICACHE_CLOUD_GCS_SERVICE_ACCOUNT`;
 *   optional `CICACHE_CLOUD_GCS_ENDPOINT`.
 *
 * @module
 */
import { backendConformance, streamOf } from "./backend_conformance.ts";
import { assert, assertRejects, assertStringIncludes } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import {
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from "../lib/deps/azure_storage_blob.ts";
import { connectAzure, createAzureBackend } from "../lib/storage/azure/backend.ts";
import { createS3Backend } from "../lib/storage/s3/backend.ts";
import { createGcsBackend } from "../lib/storage/gcs/backend.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  type Backend,
  isStorageError,
  NotFoundError,
} from "../lib/storage/backend.ts";
import { Logger } from "../lib/log.ts";

const E = Deno.env.toObject();
const RUN = crypto.randomUUID().slice(0, 8);
const OPTS = { sanitizeOps: false, sanitizeResources: false };

/** The variables named, or undefined when one is missing or empty. */
function vars<K extends string>(...names: K[]): Record<K, string> | undefined {
  const out = {} as Record<K, string>;
  for (const n of names) {
    if (!E[n]) return undefined;
    out[n] = E[n];
  }
  return out;
}

// ── Azure ──────────────────────────────────────────────────────────────────

const azureAccount = E.CICACHE_CLOUD_AZURE_ACCOUNT ?? "";
const azureEndpoint = E.CICACHE_CLOUD_AZURE_ENDPOINT ?? "";
const azureKey = azureAccount ? E.CICACHE_CLOUD_AZURE_ACCOUNT_KEY ?? "" : "";

function azureEnv(container: string, creds: Record<string, string>): Record<string, string> {
  return {
    PLUGIN_BACKEND: "azure",
    PLUGIN_ACCOUNT_NAME: azureAccount,
    PLUGIN_CONTAINER: container,
    PLUGIN_PART_SIZE_MB: "4",
    ...(azureEndpoint ? { PLUGIN_ENDPOINT: azureEndpoint } : {}),
    ...creds,
  };
}

/** Deletes a container with whatever credential made it (cleanup). */
async function dropContainer(env: Record<string, string>): Promise<void> {
  const { client } = await connectAzure(settingsFrom(env), new Logger({ level: "error" }));
  await client.getContainerClient(env.PLUGIN_CONTAINER).deleteIfExists();
}

const azureMethods: [string, Record<string, string> | undefined][] = [
  ["shared key", azureKey ? { PLUGIN_ACCOUNT_KEY: azureKey } : undefined],
  [
    "service principal",
    (() => {
      const v = azureAccount &&
        vars(
          "CICACHE_CLOUD_AZURE_TENANT_ID",
          "CICACHE_CLOUD_AZURE_CLIENT_ID",
          "CICACHE_CLOUD_AZURE_CLIENT_SECRET",
        );
      return v
        ? {
          PLUGIN_AZURE_TENANT_ID: v.CICACHE_CLOUD_AZURE_TENANT_ID,
          PLUGIN_AZURE_CLIENT_ID: v.CICACHE_CLOUD_AZURE_CLIENT_ID,
          PLUGIN_AZURE_CLIENT_SECRET: v.CICACHE_CLOUD_AZURE_CLIENT_SECRET,
        }
        : undefined;
    })(),
  ],
  [
    "OIDC federated token file",
    (() => {
      const client = E.CICACHE_CLOUD_AZURE_OIDC_CLIENT_ID || E.CICACHE_CLOUD_AZURE_CLIENT_ID;
      const v = azureAccount && client &&
        vars("CICACHE_CLOUD_AZURE_TENANT_ID", "CICACHE_CLOUD_AZURE_FEDERATED_TOKEN_FILE");
      return v
        ? {
          PLUGIN_AZURE_TENANT_ID: v.CICACHE_CLOUD_AZURE_TENANT_ID,
          PLUGIN_AZURE_CLIENT_ID: client,
          AZURE_FEDERATED_TOKEN_FILE: v.CICACHE_CLOUD_AZURE_FEDERATED_TOKEN_FILE,
        }
        : undefined;
    })(),
  ],
];

for (const [method, creds] of azureMethods) {
  const slug = method.split(" ")[0].toLowerCase();
  const env = azureEnv(`cicache-cloud-${RUN}-${slug}`, creds ?? {});
  backendConformance(`cloud azure (${method})`, async () => ({
    backend: await createAzureBackend(settingsFrom(env), new Logger({ level: "error" })),
    teardown: () => dropContainer(env),
  }), { ignore: creds === undefined });
}

/** A container SAS (`sr=c`) signed with the account key. */
function containerSas(container: string, permissions: string): string {
  return generateBlobSASQueryParameters({
    containerName: container,
    permissions: ContainerSASPermissions.parse(permissions),
    expiresOn: new Date(Date.now() + 2 * 3600_000),
  }, new StorageSharedKeyCredential(azureAccount, azureKey)).toString();
}

{
  // Container SAS: the least-privilege setup. The container must exist (a container SAS cannot make it).
  const keyEnv = azureEnv(`cicache-cloud-${RUN}-sas`, { PLUGIN_ACCOUNT_KEY: azureKey });
  backendConformance("cloud azure (container SAS, sr=c)", async () => {
    await createAzureBackend(settingsFrom(keyEnv), new Logger({ level: "error" }));
    const env = azureEnv(keyEnv.PLUGIN_CONTAINER, {
      PLUGIN_SAS_TOKEN: containerSas(keyEnv.PLUGIN_CONTAINER, "racwdl"),
    });
    return {
      backend: await createAzureBackend(settingsFrom(env), new Logger({ level: "error" })),
      teardown: () => dropContainer(keyEnv),
    };
  }, { ignore: !azureKey });
}

Deno.test({
  name: "cloud azure: a wrong account key is 'rejected the account key', without the key",
  ignore: !azureKey,
  ...OPTS,
  async fn() {
    const wrong = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(64))));
    const { log, lines } = capture();
    const err = await assertRejects(() =>
      createAzureBackend(
        settingsFrom(azureEnv(`cicache-cloud-${RUN}-badkey`, { PLUGIN_ACCOUNT_KEY: wrong })),
        log,
      )
    );
    assert(err instanceof AuthFailedError, `expected AuthFailedError, got ${err}`);
    assertStringIncludes(err.message, "rejected the account key");
    assert(!`${err.message}\n${lines.join("\n")}`.includes(wrong), "the key was printed");
  },
});

Deno.test({
  name: "cloud azure: a read-only container SAS may not write: AccessDeniedError naming sp=racwdl",
  ignore: !azureKey,
  ...OPTS,
  async fn() {
    const keyEnv = azureEnv(`cicache-cloud-${RUN}-readonly`, { PLUGIN_ACCOUNT_KEY: azureKey });
    await createAzureBackend(settingsFrom(keyEnv), new Logger({ level: "error" }));
    try {
      const ro = await createAzureBackend(
        settingsFrom(
          azureEnv(keyEnv.PLUGIN_CONTAINER, {
            PLUGIN_SAS_TOKEN: containerSas(keyEnv.PLUGIN_CONTAINER, "rl"),
          }),
        ),
        new Logger({ level: "error" }),
      );
      const err = await assertRejects(() => ro.put("k/m", streamOf(new TextEncoder().encode("x")), {}));
      assert(err instanceof AccessDeniedError, `expected AccessDeniedError, got ${err}`);
      assertStringIncludes(err.message, "sp=");
    } finally {
      await dropContainer(keyEnv);
    }
  },
});

Deno.test({
  name: "cloud azure: a container just deleted (409 ContainerBeingDeleted) is waited for, then created",
  ignore: !azureKey,
  ...OPTS,
  async fn() {
    const env = { ...azureEnv(`cicache-cloud-${RUN}-recreate`, { PLUGIN_ACCOUNT_KEY: azureKey }) };
    await createAzureBackend(settingsFrom(env), new Logger({ level: "error" }));
    await dropContainer(env);
    const { log, lines } = capture();
    try {
      const backend = await createAzureBackend(
        settingsFrom({ ...env, PLUGIN_BACKEND_OPERATION_TIMEOUT: "170s" }),
        log,
      );
      await backend.put("k/m", streamOf(new TextEncoder().encode("recreated")), {});
      console.log(
        lines.some((l) => l.includes("being deleted"))
          ? "the service answered ContainerBeingDeleted and the backend waited"
          : "the service let the container be created at once",
      );
    } finally {
      await dropContainer(env);
    }
  },
});

Deno.test({
  name: "cloud azure: an unknown storage account is NotFoundError naming PLUGIN_ACCOUNT_NAME",
  ignore: !azureKey || azureEndpoint !== "",
  ...OPTS,
  async fn() {
    const err = await assertRejects(() =>
      createAzureBackend(
        settingsFrom({
          PLUGIN_BACKEND: "azure",
          PLUGIN_ACCOUNT_NAME: `cicachenx${RUN}`,
          PLUGIN_ACCOUNT_KEY: azureKey,
          PLUGIN_CONTAINER: "cicache",
          AZURE_BLOB_MAX_RETRY_REQUESTS: "0",
        }),
        new Logger({ level: "error" }),
      )
    );
    assert(err instanceof NotFoundError, `expected NotFoundError, got ${err}`);
    assertStringIncludes(err.message, "PLUGIN_ACCOUNT_NAME");
  },
});

Deno.test({
  name: "cloud azure: a storage firewall refusal (AuthorizationFailure) names the network rules",
  ignore: !vars("CICACHE_CLOUD_AZURE_FIREWALLED_ACCOUNT", "CICACHE_CLOUD_AZURE_FIREWALLED_KEY"),
  ...OPTS,
  async fn() {
    const err = await assertRejects(() =>
      createAzureBackend(
        settingsFrom({
          PLUGIN_BACKEND: "azure",
          PLUGIN_ACCOUNT_NAME: E.CICACHE_CLOUD_AZURE_FIREWALLED_ACCOUNT,
          PLUGIN_ACCOUNT_KEY: E.CICACHE_CLOUD_AZURE_FIREWALLED_KEY,
          PLUGIN_CONTAINER: "cicache",
        }),
        new Logger({ level: "error" }),
      )
    );
    assert(err instanceof AccessDeniedError, `expected AccessDeniedError, got ${err}`);
    assertStringIncludes(err.message, "firewall");
  },
});

// ── AWS S3 ────────────────────────────────────────────────────────────────

const s3 = vars(
  "CICACHE_CLOUD_S3_BUCKET",
  "CICACHE_CLOUD_S3_REGION",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
);

function s3Env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PLUGIN_BACKEND: "s3",
    PLUGIN_BUCKET: s3?.CICACHE_CLOUD_S3_BUCKET ?? "",
    PLUGIN_REGION: s3?.CICACHE_CLOUD_S3_REGION ?? "",
    PLUGIN_ACCESS_KEY: s3?.AWS_ACCESS_KEY_ID ?? "",
    PLUGIN_SECRET_KEY: s3?.AWS_SECRET_ACCESS_KEY ?? "",
    ...(E.AWS_SESSION_TOKEN ? { PLUGIN_SESSION_TOKEN: E.AWS_SESSION_TOKEN } : {}),
    ...(E.CICACHE_CLOUD_S3_ENDPOINT ? { PLUGIN_ENDPOINT: E.CICACHE_CLOUD_S3_ENDPOINT } : {}),
    PLUGIN_PART_SIZE_MB: "5",
    ...extra,
  };
}

backendConformance("cloud s3 (AWS)", async () => ({
  backend: await createS3Backend(settingsFrom(s3Env()), new Logger({ level: "error" })),
}), { ignore: !s3 });

Deno.test({
  name: "cloud s3: a wrong secret key is refused clearly, without the key",
  ignore: !s3,
  ...OPTS,
  async fn() {
    const wrong = `wrong${crypto.randomUUID().replaceAll("-", "")}`;
    const { log, lines } = capture();
    const err = await assertRejects(async () => {
      const backend: Backend = await createS3Backend(settingsFrom(s3Env({ PLUGIN_SECRET_KEY: wrong })), log);
      await backend.stat(`cloud-${RUN}/nothing`);
    });
    assert(isStorageError(err) && err.code === "AuthFailed", `expected AuthFailed, got ${err}`);
    assert(!`${err.message}\n${lines.join("\n")}`.includes(wrong), "the secret key was printed");
  },
});

// ── Google Cloud Storage ──────────────────────────────────────────────────

const gcsBucket = E.CICACHE_CLOUD_GCS_BUCKET ?? "";
const gcsWif = vars(
  "CICACHE_CLOUD_GCS_OIDC_TOKEN",
  "CICACHE_CLOUD_GCS_PROJECT_NUMBER",
  "CICACHE_CLOUD_GCS_POOL_ID",
  "CICACHE_CLOUD_GCS_PROVIDER_ID",
  "CICACHE_CLOUD_GCS_SERVICE_ACCOUNT",
);
const gcsCreds: Record<string, string> | undefined = !gcsBucket
  ? undefined
  : E.CICACHE_CLOUD_GCS_JSON_KEY
  ? { PLUGIN_JSON_KEY: E.CICACHE_CLOUD_GCS_JSON_KEY }
  : gcsWif
  ? {
    PLUGIN_OIDC_TOKEN_ID: gcsWif.CICACHE_CLOUD_GCS_OIDC_TOKEN,
    PLUGIN_PROJECT_NUMBER: gcsWif.CICACHE_CLOUD_GCS_PROJECT_NUMBER,
    PLUGIN_POOL_ID: gcsWif.CICACHE_CLOUD_GCS_POOL_ID,
    PLUGIN_PROVIDER_ID: gcsWif.CICACHE_CLOUD_GCS_PROVIDER_ID,
    PLUGIN_SERVICE_ACCOUNT_EMAIL: gcsWif.CICACHE_CLOUD_GCS_SERVICE_ACCOUNT,
  }
  : undefined;

function gcsEnv(bucket = gcsBucket): Record<string, string> {
  return {
    PLUGIN_BACKEND: "gcs",
    PLUGIN_BUCKET: bucket,
    PLUGIN_PART_SIZE_MB: "1",
    ...(E.CICACHE_CLOUD_GCS_ENDPOINT ? { PLUGIN_ENDPOINT: E.CICACHE_CLOUD_GCS_ENDPOINT } : {}),
    ...gcsCreds,
  };
}

backendConformance("cloud gcs", async () => ({
  backend: await createGcsBackend(settingsFrom(gcsEnv()), new Logger({ level: "error" })),
}), { ignore: !gcsCreds });

Deno.test({
  name: "cloud gcs: a bucket that does not exist is NotFoundError naming the bucket",
  ignore: !gcsCreds,
  ...OPTS,
  async fn() {
    const bucket = `cicache-cloud-missing-${RUN}`;
    const err = await assertRejects(async () => {
      const backend = await createGcsBackend(settingsFrom(gcsEnv(bucket)), new Logger({ level: "error" }));
      await backend.stat("nothing");
    });
    assert(isStorageError(err) && err.code === "NotFound", `expected NotFound, got ${err}`);
    assertStringIncludes(err.message, bucket);
  },
});
