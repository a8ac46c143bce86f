/**
 * Opens the s3 backend from the settings, loading the AWS SDK only when the
 * credentials need it.
 *
 * With static keys (the common CI case) every request goes over `fetch`
 * with our SigV4: the start-up check, `stat` and `list` in `meta.ts`, the
 * transfers in `fetch_backend.ts`, so neither a restore miss nor a small
 * save or restore loads `@aws-sdk/client-s3` (about 0.3 s of CPU); no save
 * or restore of any size does (large bodies go over `node:http`:
 * `../transfer/send_body.ts`). Other
 * credentials (roles, web identity, the default chain), S3 Express
 * directory buckets, bucket names that need the SDK's addressing rules and
 * the SDK's endpoint variables take the SDK backend (`backend.ts`).
 *
 * @module
 */
import { type Backend, InvalidSettingsError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";
import { DEFAULT_RETRY_POLICY } from "../transfer/retry.ts";
import { chooseS3Credentials, normalizeEndpoint, type S3Credentials } from "./credentials.ts";
import { S3Meta } from "./meta.ts";
import { FetchS3Backend } from "./fetch_backend.ts";

const MiB = 1024 * 1024;
const SSE_VALUES = ["AES256", "aws:kms", "aws:kms:dsse"];

/** The s3 settings, checked and resolved (shared by the SDK and the fetch path). */
export interface S3Setup {
  bucket: string;
  region: string;
  /** Custom endpoint, normalised; undefined for AWS. */
  endpoint?: string;
  endpointLabel: string;
  pathStyle: boolean;
  credentials: S3Credentials;
  /** Static keys, when those are the credentials (the fetch path signs with them). */
  staticKeys?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  sse: string;
  sseKmsKeyId: string;
  acl: string;
  partSize: number;
  maxObjectSize: number;
  concurrency: number;
  idleTimeoutMs: number;
}

/**
 * Checks and resolves the s3 settings: a bucket is required, the encryption
 * must be one S3 knows (case-insensitively), region from the settings or
 * `AWS_REGION`/`AWS_DEFAULT_REGION`, credentials chosen (nothing fetched).
 *
 * @example
 * ```ts
 * const setup = resolveS3Setup(settings, log);
 * ```
 */
export function resolveS3Setup(settings: Settings, log: Logger): S3Setup {
  const ctx = { backend: "s3", op: "connect" };
  if (!settings.bucket) {
    throw new InvalidSettingsError(`no bucket: set ${describeSource(settings, "bucket")}`, ctx);
  }
  let sse = settings.encryption;
  if (sse && !SSE_VALUES.includes(sse)) {
    const match = SSE_VALUES.find((v) => v.toLowerCase() === sse.toLowerCase());
    if (match === undefined) {
      throw new InvalidSettingsError(
        `PLUGIN_ENCRYPTION=${
          JSON.stringify(sse)
        } is not an S3 encryption: use AES256, aws:kms or aws:kms:dsse`,
        ctx,
      );
    }
    sse = match;
  }
  const endpoint = settings.endpoint ? normalizeEndpoint(settings.endpoint) : undefined;
  const region = settings.region || Deno.env.get("AWS_REGION") || Deno.env.get("AWS_DEFAULT_REGION") ||
    "us-east-1";
  const credentials = chooseS3Credentials(settings, log, region);
  return {
    bucket: settings.bucket,
    region,
    endpoint,
    endpointLabel: endpoint ?? `AWS S3 (${region})`,
    pathStyle: settings.pathStyle,
    credentials,
    staticKeys: settings.accessKey && settings.secretKey
      ? {
        accessKeyId: settings.accessKey,
        secretAccessKey: settings.secretKey,
        ...(settings.sessionToken ? { sessionToken: settings.sessionToken } : {}),
      }
      : undefined,
    sse,
    sseKmsKeyId: settings.sseKmsKeyId,
    acl: settings.acl,
    partSize: settings.partSizeMb * MiB,
    maxObjectSize: settings.multipartMaxUploadSizeMb * MiB,
    concurrency: settings.transferConcurrency,
    idleTimeoutMs: settings.backendOperationTimeout,
  };
}

/**
 * Logs the one "storage backend" line (never a secret).
 *
 * @example
 * ```ts
 * announceS3(setup, log, 16 * 2 ** 20, false);
 * ```
 */
export function announceS3(setup: S3Setup, log: Logger, partSize: number, directoryBucket: boolean): void {
  log.info("storage backend", {
    backend: "s3",
    bucket: setup.bucket,
    endpoint: setup.endpoint ?? "aws",
    region: setup.region,
    auth: setup.credentials.method,
    part_size_mib: partSize / MiB,
    ...(directoryBucket ? { directory_bucket: true } : {}),
  });
}

/** SDK settings from the environment that change addressing: the fetch path leaves those to the SDK. */
const SDK_ADDRESSING_ENV = [
  "AWS_ENDPOINT_URL",
  "AWS_ENDPOINT_URL_S3",
  "AWS_USE_FIPS_ENDPOINT",
  "AWS_USE_DUALSTACK_ENDPOINT",
  "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
  "AWS_S3_DISABLE_MULTIREGION_ACCESS_POINTS",
];

/**
 * The endpoint the fetch path addresses, or undefined when the SDK must
 * decide (other credentials, directory buckets, names that are not plain DNS
 * labels in virtual-host style, an endpoint with a path, addressing
 * variables in the environment).
 */
function fetchEndpoint(setup: S3Setup): string | undefined {
  if (!setup.staticKeys || setup.bucket.endsWith("--x-s3")) return undefined;
  if (SDK_ADDRESSING_ENV.some((v) => Deno.env.get(v))) return undefined;
  if (!setup.pathStyle && !/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(setup.bucket)) return undefined;
  if (!/^[a-z0-9-]+$/.test(setup.region)) return undefined;
  if (setup.endpoint === undefined) return `https://s3.${setup.region}.amazonaws.com`;
  let url: URL;
  try {
    url = new URL(setup.endpoint);
  } catch {
    return undefined;
  }
  if (url.pathname !== "/" || url.search || url.username) return undefined;
  return url.origin;
}

/**
 * Creates the s3 backend from the settings: chooses the credentials (logged
 * once at info, never the secret), checks the bucket answers, and returns
 * the backend. With static keys the check, `stat` and `list` need no SDK.
 * `tuning.listPageSize` (tests) sets the fetch path's list page size.
 *
 * @example
 * ```ts
 * const backend = await createS3Backend(settings, log);
 * const info = await backend.stat("key/node_modules");
 * ```
 */
export async function createS3Backend(
  settings: Settings,
  log: Logger,
  tuning: { listPageSize?: number } = {},
): Promise<Backend> {
  const setup = resolveS3Setup(settings, log);
  const endpoint = fetchEndpoint(setup);
  if (endpoint === undefined) {
    const { sdkS3Backend } = await import("./backend.ts");
    return await sdkS3Backend(setup, log, { check: true, announce: true });
  }
  const backend = fetchS3Backend(setup, endpoint, log, tuning.listPageSize);
  announceS3(setup, log, backend.partSize, false);
  await backend.meta.check();
  return backend;
}

/** The s3 backend over `fetch` for static keys (see `fetch_backend.ts`). */
function fetchS3Backend(
  setup: S3Setup,
  endpoint: string,
  log: Logger,
  listPageSize?: number,
): FetchS3Backend {
  const meta = new S3Meta({
    endpoint,
    pathStyle: setup.pathStyle,
    region: setup.region,
    bucket: setup.bucket,
    endpointLabel: setup.endpointLabel,
    authHint: setup.credentials.hint,
    credentials: setup.staticKeys!,
    policy: { ...DEFAULT_RETRY_POLICY, idleMs: setup.idleTimeoutMs || 180_000 },
    listPageSize,
    log,
  });
  return new FetchS3Backend({
    meta,
    bucket: setup.bucket,
    partSize: setup.partSize || 16 * MiB,
    maxObjectSize: setup.maxObjectSize || 51200 * MiB,
    concurrency: setup.concurrency || 4,
    acl: setup.acl || undefined,
    sse: setup.sse || undefined,
    sseKmsKeyId: setup.sseKmsKeyId || undefined,
    log,
  });
}
