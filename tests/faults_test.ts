/**
 * The fault table (tests/fault_table.ts) on every cloud backend against its
 * real test server: s3 on Swift, azure on Azurite, gcs on the emulator. Each
 * server is started once for this file and stopped by the last test of its
 * backend (and by its watchdog should the run die).
 *
 * @module
 */
import { assert } from "./assert.ts";
import {
  FAULT_CASES,
  FAULT_POLICY,
  faultRuns,
  type FaultTarget,
  runDnsCase,
  runFaultCase,
} from "./fault_table.ts";
import { makeS3Client, S3Backend } from "../lib/storage/s3/backend.ts";
import { AzureBackend } from "../lib/storage/azure/backend.ts";
import { PIPELINE_OPTIONS } from "../lib/storage/azure/auth.ts";
import { GcsBackend } from "../lib/storage/gcs/backend.ts";
import type { GcsAuth } from "../lib/storage/gcs/auth.ts";
import { BlobServiceClient, StorageSharedKeyCredential } from "../lib/deps/azure_storage_blob.ts";
import { startSwift } from "../scripts/servers/swift.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";
import { startGcs } from "../scripts/servers/gcs.ts";
import { UNRESOLVABLE_HOST } from "../scripts/servers/faults.ts";

const MiB = 1024 * 1024;
const OPTS = { sanitizeOps: false, sanitizeResources: false };

interface Started {
  target: FaultTarget;
  stop(): Promise<void>;
}

/** Backends under test: each starts its server and describes its wire traffic. */
const BACKENDS: Record<string, () => Promise<Started>> = {
  async s3() {
    const s = await startSwift();
    const make = (endpoint: string, log?: import("../lib/log.ts").Logger) =>
      new S3Backend({
        client: makeS3Client({
          region: s.region,
          endpoint,
          pathStyle: true,
          credentials: () => Promise.resolve({ accessKeyId: s.accessKey, secretAccessKey: s.secretKey }),
          idleTimeoutMs: FAULT_POLICY.idleMs,
          concurrency: 2,
          log,
        }),
        bucket: s.bucket,
        partSize: 5 * MiB,
        rangeSize: 4 * MiB,
        concurrency: 2,
        idleTimeoutMs: FAULT_POLICY.idleMs,
        retries: FAULT_POLICY.retries,
        retryBaseMs: FAULT_POLICY.baseMs,
        log,
      });
    return {
      target: {
        kind: "s3",
        through: make,
        owner: make(s.endpoint),
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
    const make = (endpoint: string, log?: import("../lib/log.ts").Logger) =>
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
        timeoutMs: FAULT_POLICY.idleMs,
        maxRetries: FAULT_POLICY.retries,
        retryDelayMs: FAULT_POLICY.baseMs,
        log,
      });
    const owner = make(a.url);
    await owner.ensureContainer();
    return {
      target: {
        kind: "azure",
        through: make,
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
    const make = (endpoint: string, log?: import("../lib/log.ts").Logger) =>
      new GcsBackend({
        bucket: "faults",
        endpoint,
        auth: noAuth,
        uploadMode: "chunked",
        partSize: 256 * 1024,
        rangeSize: 1 * MiB,
        concurrency: 2,
        requestTimeoutMs: FAULT_POLICY.idleMs,
        retries: FAULT_POLICY.retries,
        retryBaseMs: FAULT_POLICY.baseMs,
        log,
      });
    return {
      target: {
        kind: "gcs",
        through: make,
        owner: make(g.endpoint),
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

for (const [kind, start] of Object.entries(BACKENDS)) {
  let started: Promise<Started> | undefined;
  const get = () => started ??= start();
  for (const c of FAULT_CASES) {
    Deno.test({
      name: `faults: ${kind}: ${c.name} (${c.expect === "ok" ? "recovers" : "fails within the bound"})`,
      ...OPTS,
      async fn() {
        const { target } = await get();
        for (let run = 0; run < faultRuns(); run++) {
          await runFaultCase(target, c, 1 + run * 7919 + c.name.length);
        }
      },
    });
  }
  Deno.test({
    name: `faults: ${kind}: an unresolvable host fails clearly and quickly`,
    ...OPTS,
    async fn() {
      const s = await get();
      try {
        const run = await runDnsCase(s.target, `http://${UNRESOLVABLE_HOST}:80`);
        assert(/resolve|dns|ENOTFOUND|reach|lookup|not found/i.test(run.error ?? ""), run.error);
      } finally {
        await s.target.owner.close?.();
        await s.stop();
      }
    },
  });
}
