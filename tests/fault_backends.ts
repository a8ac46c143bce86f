/**
 * The cloud backends the fault table (tests/fault_table.ts) runs on, each
 * with its real test server, the proxy-facing client settings and a
 * description of its wire traffic. Shared by tests/faults_test.ts and
 * `deno task soak`.
 *
 * @module
 */
import { FAULT_POLICY, type FaultTarget } from "./fault_table.ts";
import { makeS3Client, S3Backend } from "../lib/storage/s3/backend.ts";
import { AzureBackend } from "../lib/storage/azure/backend.ts";
import { PIPELINE_OPTIONS } from "../lib/storage/azure/auth.ts";
import { GcsBackend } from "../lib/storage/gcs/backend.ts";
import type { GcsAuth } from "../lib/storage/gcs/auth.ts";
import type { Logger } from "../lib/log.ts";
import { BlobServiceClient, StorageSharedKeyCredential } from "../lib/deps/azure_storage_blob.ts";
import { startSwift } from "../scripts/servers/swift.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";
import { startGcs } from "../scripts/servers/gcs.ts";

const MiB = 1024 * 1024;
/** The owner (straight to the server, also the load case's 16 concurrent transfers) gets a generous idle timeout. */
const OWNER_IDLE_MS = 60_000;
/** A started server and its fault target. */
export interface Started {
  target: FaultTarget;
  stop(): Promise<void>;
}

/** Backends under test: each starts its server and describes its wire traffic. */
export const FAULT_BACKENDS: Record<string, () => Promise<Started>> = {
  async s3() {
    const s = await startSwift();
    const make = (
      endpoint: string,
      log?: Logger,
      idleMs = FAULT_POLICY.idleMs,
      retries = FAULT_POLICY.retries,
    ) =>
      new S3Backend({
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
      target: {
        kind: "s3",
        through: (endpoint, log, retries) => make(endpoint, log, FAULT_POLICY.idleMs, retries),
        owner: make(s.endpoint, undefined, OWNER_IDLE_MS),
        port: Number(new URL(s.endpoint).port),
        isUpload: (r) => r.method === "PUT",
        isDownload: (r) => r.method === "GET" && "range" in r.headers,
        size: 11 * MiB + 7,
        secrets: [s.secretKey],
      },
      stop: s.stop,
    };
  },
  async azure() {
    const a = await startAzurite();
    const make = (
      endpoint: string,
      log?: Logger,
      idleMs = FAULT_POLICY.idleMs,
      retries = FAULT_POLICY.retries,
    ) =>
      new AzureBackend({
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
    const owner = make(a.url, undefined, OWNER_IDLE_MS);
    await owner.ensureContainer();
    return {
      target: {
        kind: "azure",
        through: (endpoint, log, retries) => make(endpoint, log, FAULT_POLICY.idleMs, retries),
        owner,
        port: Number(new URL(a.url).port),
        isUpload: (r) => r.method === "PUT" && r.path.includes("comp=block") && !r.path.includes("blocklist"),
        isDownload: (r) => r.method === "GET" && ("x-ms-range" in r.headers || "range" in r.headers),
        size: 3 * MiB + 7,
        secrets: [a.accountKey],
      },
      stop: a.stop,
    };
  },
  async gcs() {
    const g = await startGcs();
    const noAuth: GcsAuth = {
      method: "none",
      headers: () => Promise.resolve({}),
      sdk: { authenticated: false },
    };
    const make = (
      endpoint: string,
      log?: Logger,
      idleMs = FAULT_POLICY.idleMs,
      retries = FAULT_POLICY.retries,
    ) =>
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
      target: {
        kind: "gcs",
        through: (endpoint, log, retries) => make(endpoint, log, FAULT_POLICY.idleMs, retries),
        owner: make(g.endpoint, undefined, OWNER_IDLE_MS),
        port: Number(new URL(g.endpoint).port),
        isUpload: (r) => r.method === "PUT" && r.path.includes("upload"),
        isDownload: (r) => r.method === "GET" && "range" in r.headers,
        size: 2 * MiB + 7,
        secrets: [],
      },
      stop: g.stop,
    };
  },
};
