/**
 * S3 error handling shared by the SDK backend and the fetch-based metadata
 * requests (`meta.ts`): the shape of an S3 error (SDK or our own), which
 * failures are worth a retry, and the typed {@link StorageError} with a
 * message that says what to fix. Loads no SDK code.
 *
 * @module
 */
import {
  AccessDeniedError,
  AuthFailedError,
  InvalidSettingsError,
  NotFoundError,
  type ObjectMeta,
  StorageError,
  UnavailableError,
} from "../backend.ts";
import { IdleTimeoutError } from "../transfer/retry.ts";
import { decodeMeta } from "../metadata.ts";
import { isCredentialError } from "./credentials.ts";

/** What an error message names: the bucket, where it lives, and which settings to check. */
export interface S3ErrorContext {
  bucket: string;
  /** The endpoint (or `AWS S3`). */
  endpointLabel?: string;
  /** What to check when credentials are refused. */
  authHint?: string;
  /** Attempts per request (retries + 1), named when every one of them idled out. */
  attempts?: number;
}

/**
 * Maps an SDK, fetch or network error to a typed {@link StorageError} whose
 * message says what to fix.
 *
 * @example
 * ```ts
 * throw s3Error(err, "stat", "key/node_modules", { bucket: "cache" });
 * ```
 */
export function s3Error(
  err: unknown,
  op: string,
  object: string | undefined,
  o: S3ErrorContext,
): StorageError {
  if (err instanceof StorageError) return err;
  const ctx = { backend: "s3", op, object, cause: err };
  const code = errorCode(err);
  const status = httpStatus(err);
  const where = o.endpointLabel ?? "AWS S3";
  const hint = o.authHint ?? "check the access key and secret key";
  switch (code) {
    case "NoSuchBucket":
      return new NotFoundError(
        `bucket "${o.bucket}" does not exist at ${where}: create it, or fix PLUGIN_BUCKET (and PLUGIN_ENDPOINT)`,
        ctx,
      );
    case "NoSuchKey":
      return new NotFoundError(`no object "${object}" in bucket "${o.bucket}"`, ctx);
    case "SignatureDoesNotMatch":
      return new AuthFailedError(
        `${where} rejected the request signature (SignatureDoesNotMatch): the secret key is wrong; ${hint}`,
        ctx,
      );
    case "InvalidAccessKeyId":
      return new AuthFailedError(
        `${where} does not know the access key id (InvalidAccessKeyId): ${hint}`,
        ctx,
      );
    case "ExpiredToken":
    case "ExpiredTokenException":
    case "TokenRefreshRequired":
    case "InvalidToken":
      return new AuthFailedError(`the session token was refused (${code}): ${hint}`, ctx);
    case "InvalidIdentityToken":
    case "IDPRejectedClaim":
      return new AuthFailedError(`STS refused the OIDC token (${code}): ${hint}`, ctx);
    case "CredentialsProviderError":
      return new AuthFailedError(`no usable AWS credentials (${shortMessage(err)}): ${hint}`, ctx);
    case "AuthorizationHeaderMalformed":
    case "PermanentRedirect":
    case "IllegalLocationConstraintException":
      return new InvalidSettingsError(
        `the bucket "${o.bucket}" is in another region than the one configured (${code}): ` +
          `set PLUGIN_REGION to the bucket's region`,
        ctx,
      );
    case "AccessDenied":
    case "AccessDeniedException":
    case "AllAccessDisabled":
      if (isCredentialError(err)) {
        return new AccessDeniedError(`STS refused to hand out role credentials (${code}): ${hint}`, ctx);
      }
      return new AccessDeniedError(
        `the credentials may not ${opVerb(op)} in bucket "${o.bucket}" (${code}): grant the identity ` +
          `s3:GetObject, s3:PutObject, s3:ListBucket, s3:DeleteObject (and s3:AbortMultipartUpload) on it`,
        ctx,
      );
    case "EntityTooLarge":
      return new StorageError("TooLarge", `the object is too large for this store (${code})`, ctx);
  }
  if (err instanceof IdleTimeoutError) {
    const tries = o.attempts === undefined ? "" : ` on each of ${o.attempts} attempts`;
    return new UnavailableError(
      `${where} made no progress for ${err.ms / 1000} s${tries} (backend operation timeout): check ` +
        `PLUGIN_ENDPOINT, the network and the store's health`,
      ctx,
    );
  }
  if (isNetworkError(err)) {
    return new UnavailableError(
      `cannot reach ${where} (${code || shortMessage(err)}): check PLUGIN_ENDPOINT, the network and the ` +
        `store's health`,
      ctx,
    );
  }
  if (status === 403) {
    return new AccessDeniedError(
      `the credentials may not ${opVerb(op)} in bucket "${o.bucket}" (HTTP 403): check the identity's ` +
        `permissions on the bucket, or the keys (${hint})`,
      ctx,
    );
  }
  if (status === 404) {
    return new NotFoundError(`not found in bucket "${o.bucket}" (HTTP 404, ${code})`, ctx);
  }
  if (status !== undefined && status >= 500) {
    return new UnavailableError(
      `${where} kept failing (HTTP ${status}, ${code}) after retries: try again later`,
      ctx,
    );
  }
  return new StorageError("Failed", `${code || "error"}: ${shortMessage(err)}`, ctx);
}

/**
 * Object metadata as stored: some S3-compatible stores (Swift's s3api behind
 * WSGI) hand `x-amz-meta-cicache_format` back as `cicache-format`; our keys
 * are restored to their underscore spelling, and values decoded (`metadata.ts`).
 */
export function normalizeMeta(meta: Record<string, string> | undefined): ObjectMeta {
  const out: ObjectMeta = {};
  for (const [k, v] of Object.entries(decodeMeta(meta))) {
    out[k.startsWith("cicache-") ? k.replaceAll("-", "_") : k] = v;
  }
  return out;
}

function opVerb(op: string): string {
  switch (op) {
    case "get":
      return "read objects";
    case "put":
      return "write objects";
    case "list":
    case "connect":
      return "list objects";
    case "delete":
      return "delete objects";
    case "stat":
      return "read object metadata";
    default:
      return op;
  }
}

export interface SdkErrorShape {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
  cause?: unknown;
  errors?: unknown[];
}

export function httpStatus(err: unknown): number | undefined {
  return (err as SdkErrorShape | undefined)?.$metadata?.httpStatusCode;
}

export function errorCode(err: unknown): string {
  const e = err as SdkErrorShape | undefined;
  if (!e) return "";
  return e.Code ?? (typeof e.code === "string" ? e.code : undefined) ?? e.name ?? "";
}

export function isCode(err: unknown, code: string): boolean {
  return errorCode(err) === code;
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "TimeoutError",
  "RequestTimeout",
  "NetworkingError",
]);

export function isNetworkError(err: unknown): boolean {
  const e = err as SdkErrorShape | undefined;
  if (!e) return false;
  if (NETWORK_CODES.has(errorCode(e)) || NETWORK_CODES.has(e.name ?? "")) return true;
  if (e.name === "AggregateError" && Array.isArray(e.errors)) return e.errors.some(isNetworkError);
  if (
    /socket hang up|ECONNREFUSED|connect|network/i.test(e.message ?? "") &&
    e.$metadata?.httpStatusCode === undefined
  ) {
    return true;
  }
  return e.cause !== undefined && e.cause !== err && isNetworkError(e.cause);
}

/** Whether a failed request is worth another attempt. */
export function transient(err: unknown): boolean {
  if (err instanceof StorageError || isCredentialError(err)) return false;
  const status = httpStatus(err);
  if (status !== undefined) return status >= 500 || status === 408 || status === 429;
  return true; // no HTTP answer: network error, idle timeout or a broken body
}

/** A throttling answer's `Retry-After`, when the SDK kept the response. */
export function retryAfterHeader(err: unknown): string | undefined {
  const headers = (err as { $response?: { headers?: Record<string, string> } } | undefined)?.$response
    ?.headers;
  if (!headers) return undefined;
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === "retry-after") return v;
  return undefined;
}

export function shortMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return (text.split("\n")[0] ?? "").slice(0, 200);
}
