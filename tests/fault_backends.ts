/**
 * The cloud backends the fault table (tests/fault_table.ts) runs on, each
 * with its real test server, the proxy-facing client settings and a
 * description of its wire traffic. Shared by tests/faults_test.ts and
 * `deno task soak`.
 *
 * @module
 */
import { FAULT_POLICY, type FaultTarget } from "./fault_table.ts";
import type { Backend } from "../lib/storage/backend.ts";
import { makeS3Client, S3Backend } from "../lib/storage/s3/backend.ts";
import { FetchS3Backend } from "../lib/storage/s3/fetch_backend.ts";
import { S3Meta } from "../lib/storage/s3/meta.ts";
import { AzureBackend } from "../lib/storage/azure/backend.ts";
import { FetchAzureBackend } from "../lib/storage/azure/fetch_backend.ts";
import { AzureRest } from "../lib/storage/azure/rest.ts";
import { PIPELINE_OPTIONS } from "../lib/storage/azure/auth.ts";
import { GcsBackend } from "../lib/storage/gcs/backend.ts";
import type { GcsAuth } from "../lib/storage/gcs/auth.ts";
import { Logger } from "../lib/log.ts";
import { BlobServiceClient, StorageSharedKeyCredential } from "../lib/deps/azure_storage_blob.ts";
import { startSwift } from "../scripts/servers/swift.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";
import { startGcs } from "../scripts/servers/gcs.ts";
import { startHarnessService } from "../scripts/servers/harness.ts";
import { startSshd } from "../scripts/servers/sshd.ts";
import { HarnessClient } from "../lib/storage/harness/client.ts";
import { HarnessBackend } from "../lib/storage/harness/backend.ts";
import { SftpBackend } from "../lib/storage/sftp/backend.ts";
import { connectOptions } from "../lib/storage/sftp/connect.ts";
import { settingsFrom } from "./support.ts";

const MiB = 1024 * 1024;
/** The owner (straight to the server, also the load case's 16 concurrent transfers) gets a generous idle timeout. */
const OWNER_IDLE_MS = 60_000;
/** A started server and its fault target. */
export interface Started {
  target: FaultTarget;
  /**
   * The ci-cache CLI environment (PLUGIN_*) that reaches the server through `endpoint` (a fault proxy's
   * url), with the table's idle timeout and small parts, so a small tree is several parts and ranges.
   */
  env(endpoint: string): Record<string, string>;
  /** The server's own endpoint, for {@link Started.env} without a proxy. */
  direct: string;
  stop(): Promise<void>;
}

/** CLI settings every backend shares in the table: the idle timeout of {@link FAULT_POLICY}, 2 transfers. */
const CLI_COMMON = {
  PLUGIN_BACKEND_OPERATION_TIMEOUT: `${FAULT_POLICY.idleMs}ms`,
  PLUGIN_TRANSFER_CONCURRENCY: "2",
};

/** One backend instance of the table: its log, idle timeout and retries. */
interface Policy {
  log?: Logger;
  idleMs: number;
  retries: number;
}

/**
 * A fault target from one backend factory: `through` builds it for an endpoint (the proxy, or one that never
 * answers) with the table's policy or the retries and idle timeout a case asks for; `owner` talks straight
 * to the server (`direct`) with {@link OWNER_IDLE_MS}.
 */
function target(
  make: (endpoint: string, policy: Policy) => Backend,
  direct: string,
  rest: Omit<FaultTarget, "through" | "owner">,
): FaultTarget {
  return {
    ...rest,
    through: (endpoint, log, retries = FAULT_POLICY.retries, idleMs = FAULT_POLICY.idleMs) =>
      make(endpoint, { log, idleMs, retries }),
    owner: make(direct, { idleMs: OWNER_IDLE_MS, retries: FAULT_POLICY.retries }),
  };
}

/** Backends that are not HTTP: the raw-TCP proxy, and only the cases {@link applies} keeps. */
export const RAW_TCP_BACKENDS: readonly string[] = ["sftp"];

/**
 * Backends the load case (8 concurrent saves + 8 restores of one key) does not hold on, and why: the Harness
 * multipart layout is the Go plugin's, parts stored as `<name>.part1…N` beside the manifest, so concurrent
 * saves of one key overwrite each other's parts (a restore then fails the manifest's MD5 check: a clean
 * failure, never a mixed tree), and Swift answers concurrent PUTs of one name `202 Accepted` without an ETag.
 */
export const LOAD_DOES_NOT_HOLD: Record<string, string> = {
  harness: "concurrent saves of one key share the Go plugin's part names",
};

/** Backends under test: each starts its server and describes its wire traffic. */
export const FAULT_BACKENDS: Record<string, () => Promise<Started>> = {
  s3: () => s3Target(false),
  /** The same Swift through the SDK-free path static keys take (fetch + our SigV4). */
  "s3-fetch": () => s3Target(true),
  azure: () => azureTarget(false),
  /** The same Azurite through the SDK-free path a shared key takes (fetch + our Shared Key signing). */
  "azure-fetch": () => azureTarget(true),
  async gcs() {
    const g = await startGcs();
    const noAuth: GcsAuth = {
      method: "none",
      headers: () => Promise.resolve({}),
      sdk: { authenticated: false },
    };
    const make = (endpoint: string, { log, idleMs, retries }: Policy) =>
      new GcsBackend({
        bucket: "faults",
        endpoint,
        auth: noAuth,
        uploadMode: "chunked",
        partSize: 256 * 1024,
        rangeSize: 1 * MiB,
        concurrency: 2,
        requestTimeoutMs: idleMs,
        retries,
        retryBaseMs: FAULT_POLICY.baseMs,
        log,
      });
    return {
      target: target(make, g.endpoint, {
        kind: "gcs",
        port: Number(new URL(g.endpoint).port),
        isUpload: (r) => r.method === "PUT" && r.path.includes("upload"),
        isDownload: (r) => r.method === "GET" && "range" in r.headers,
        size: 2 * MiB + 7,
        secrets: [],
      }),
      env: (endpoint) => ({
        ...g.env,
        ...CLI_COMMON,
        PLUGIN_ENDPOINT: endpoint,
        PLUGIN_BUCKET: "faults",
        PLUGIN_PART_SIZE_MB: "1",
      }),
      direct: g.endpoint,
      stop: g.stop,
    };
  },
  /**
   * The Harness fake in front of Swift. Two services share the bucket: the owner's hands out URLs to Swift
   * itself, the faulty one URLs to the current fault proxy (the data path: part PUTs and ranged GETs go
   * through it; the service calls do not).
   */
  async harness() {
    const s = await startSwift();
    const token = "harness-fault-table-token-0123456789";
    const accountId = "acct";
    let dataEndpoint = s.endpoint;
    let service, owned;
    try {
      service = await startHarnessService({ swift: s, token, accountId, dataEndpoint: () => dataEndpoint });
      owned = await startHarnessService({ swift: s, token, accountId });
    } catch (err) {
      await service?.stop();
      await s.stop();
      throw err;
    }
    const faulty = service;
    const owner = owned;
    // Straight to Swift (the owner) through the owner's service; any other endpoint is the faulty service's
    // data path.
    const make = (endpoint: string, { log, idleMs, retries }: Policy) => {
      if (endpoint !== s.endpoint) dataEndpoint = endpoint;
      const policy = { retries, baseMs: FAULT_POLICY.baseMs, capMs: 30_000, idleMs };
      return new HarnessBackend({
        client: new HarnessClient({
          baseUrl: endpoint === s.endpoint ? owner.baseUrl : faulty.baseUrl,
          token,
          accountId,
          cacheType: "",
          useGcs: false,
          policy,
          log,
        }),
        accountId,
        partSize: 1 * MiB,
        concurrency: 2,
        multipart: true,
        maxSize: 1024 * MiB,
        policy,
        log,
      });
    };
    return {
      target: target(make, s.endpoint, {
        kind: "harness",
        port: Number(new URL(s.endpoint).port),
        isUpload: (r) => r.method === "PUT",
        // Ranged GETs of parts (`<name>.partN`): not the manifest's first range or `stat`'s 64-byte peek, whose
        // few hundred bytes end before most fault offsets.
        isDownload: (r) => r.method === "GET" && "range" in r.headers && /\.part\d+\?/.test(r.path),
        size: 3 * MiB + 7,
        secrets: [token, s.secretKey],
      }),
      env: (endpoint) => {
        dataEndpoint = endpoint;
        return {
          ...CLI_COMMON,
          PLUGIN_BACKEND: "harness",
          PLUGIN_CACHE_SERVICE_BASE_URL: faulty.baseUrl,
          PLUGIN_CACHE_SERVICE_BEARER_TOKEN: token,
          PLUGIN_ACCOUNT_ID: accountId,
          PLUGIN_ENABLE_MULTIPART: "true",
          PLUGIN_MULTIPART_CHUNK_SIZE_MB: "1",
          PLUGIN_PART_SIZE_MB: "1",
        };
      },
      direct: s.endpoint,
      async stop() {
        await faulty.stop();
        await owner.stop();
        await s.stop();
      },
    };
  },
  /**
   * OpenSSH sshd: not HTTP, so the raw-TCP proxy faults whole connections (the SSH session of a transfer)
   * and the HTTP-only cases do not run (see `applies` in fault_table.ts).
   */
  async sftp() {
    const d = await startSshd();
    let base;
    try {
      base = await connectOptions(settingsFrom(d.env));
    } catch (err) {
      await d.stop();
      throw err;
    }
    const options = base;
    const make = (endpoint: string, { log, idleMs, retries }: Policy) => {
      const u = new URL(endpoint);
      return new SftpBackend({
        connect: { ...options, host: u.hostname, port: Number(u.port), readyTimeoutMs: idleMs },
        root: d.cacheRoot,
        log: log ?? new Logger({ level: "error", sink: () => {} }),
        retry: { retries, baseMs: FAULT_POLICY.baseMs, capMs: 30_000, idleMs },
        requestsInFlight: 8,
      });
    };
    const direct = `tcp://127.0.0.1:${d.port}`;
    const keyLines = (await Deno.readTextFile(d.clientKeyFile)).split("\n").filter((l) =>
      l.length > 20 && !l.includes(" ")
    );
    return {
      target: target(make, direct, {
        kind: "sftp",
        port: d.port,
        isUpload: () => true,
        isDownload: () => true,
        size: 2 * MiB + 7,
        secrets: keyLines,
        raw: true,
      }),
      env: (endpoint) => {
        const u = new URL(endpoint);
        return { ...d.env, ...CLI_COMMON, SFTP_HOST: u.hostname, SFTP_PORT: u.port };
      },
      direct,
      stop: d.stop,
    };
  },
};

/** The s3 target on Swift: the SDK backend, or (`fetchPath`) the fetch backend static keys take. */
async function s3Target(fetchPath: boolean): Promise<Started> {
  const s = await startSwift();
  const make = (endpoint: string, { log, idleMs, retries }: Policy): Backend =>
    fetchPath
      ? new FetchS3Backend({
        meta: new S3Meta({
          endpoint,
          pathStyle: true,
          region: s.region,
          bucket: s.bucket,
          endpointLabel: endpoint,
          credentials: { accessKeyId: s.accessKey, secretAccessKey: s.secretKey },
          policy: { retries, baseMs: FAULT_POLICY.baseMs, capMs: 30_000, idleMs },
          log,
        }),
        bucket: s.bucket,
        partSize: 5 * MiB,
        rangeSize: 4 * MiB,
        concurrency: 2,
        log,
      })
      : new S3Backend({
        client: makeS3Client({
          region: s.region,
          endpoint,
          pathStyle: true,
          credentials: () => Promise.resolve({ accessKeyId: s.accessKey, secretAccessKey: s.secretKey }),
          idleTimeoutMs: idleMs,
          concurrency: 2,
          log,
        }),
        bucket: s.bucket,
        endpointLabel: endpoint,
        partSize: 5 * MiB,
        rangeSize: 4 * MiB,
        concurrency: 2,
        idleTimeoutMs: idleMs,
        retries,
        retryBaseMs: FAULT_POLICY.baseMs,
        log,
      });
  return {
    target: target(make, s.endpoint, {
      kind: "s3",
      port: Number(new URL(s.endpoint).port),
      isUpload: (r) => r.method === "PUT",
      isDownload: (r) => r.method === "GET" && "range" in r.headers,
      size: 11 * MiB + 7,
      secrets: [s.secretKey],
    }),
    env: (endpoint) => ({ ...s.env, ...CLI_COMMON, PLUGIN_ENDPOINT: endpoint, PLUGIN_PART_SIZE_MB: "5" }),
    direct: s.endpoint,
    stop: s.stop,
  };
}

/** The azure target on Azurite: the SDK backend, or (`fetchPath`) the fetch backend a shared key takes. */
async function azureTarget(fetchPath: boolean): Promise<Started> {
  const a = await startAzurite();
  const make = (endpoint: string, { log, idleMs, retries }: Policy): Backend =>
    fetchPath
      ? new FetchAzureBackend({
        rest: new AzureRest({
          serviceUrl: endpoint === a.url ? a.url : `${endpoint}/${a.accountName}`,
          credential: { kind: "shared-key", accountName: a.accountName, accountKey: a.accountKey },
          context: {
            auth: {
              method: "shared-key",
              description: "the fault table's account key",
              accountName: a.accountName,
              serviceUrl: endpoint,
              serviceUrlSource: "",
              secretSource: "the account key",
            },
            container: "cicache",
            sasParam: () => undefined,
          },
          policy: { retries, baseMs: FAULT_POLICY.baseMs, capMs: 30_000, idleMs },
          log,
        }),
        partSize: 1 * MiB,
        rangeSize: 1 * MiB,
        concurrency: 2,
        log,
      })
      : new AzureBackend({
        client: new BlobServiceClient(
          endpoint === a.url ? a.url : `${endpoint}/${a.accountName}`,
          new StorageSharedKeyCredential(a.accountName, a.accountKey),
          PIPELINE_OPTIONS,
        ),
        container: "cicache",
        partSize: 1 * MiB,
        rangeSize: 1 * MiB,
        concurrency: 2,
        timeoutMs: idleMs,
        maxRetries: retries,
        retryDelayMs: FAULT_POLICY.baseMs,
        log,
      });
  const t = target(make, a.url, {
    kind: "azure",
    port: Number(new URL(a.url).port),
    isUpload: (r) => r.method === "PUT" && r.path.includes("comp=block") && !r.path.includes("blocklist"),
    isDownload: (r) => r.method === "GET" && ("x-ms-range" in r.headers || "range" in r.headers),
    size: 3 * MiB + 7,
    secrets: [a.accountKey],
  });
  await (t.owner instanceof AzureBackend
    ? t.owner.ensureContainer()
    : (t.owner as FetchAzureBackend).rest.ensureContainer());
  return {
    target: t,
    env: (endpoint) => ({
      ...a.env,
      ...CLI_COMMON,
      PLUGIN_ENDPOINT: endpoint === a.url ? a.url : `${endpoint}/${a.accountName}`,
      PLUGIN_CONTAINER: "cicache",
      PLUGIN_PART_SIZE_MB: "1",
      AZURE_BLOB_MAX_RETRY_REQUESTS: String(FAULT_POLICY.retries),
    }),
    direct: a.url,
    stop: a.stop,
  };
}
