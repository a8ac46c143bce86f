/**
 * S3 backend: Amazon S3 and S3-compatible stores (MinIO, Ceph RGW, R2,
 * OpenStack Swift s3api, …) on `@aws-sdk/client-s3`.
 *
 * - `put` streams a multipart upload (parts of `partSizeMb` MiB, grown so
 *   10 000 parts cover the maximum object size; `transferConcurrency` in
 *   flight). The object appears only at CompleteMultipartUpload; a failing
 *   stream or an abort aborts the upload, so no partial object or orphaned
 *   parts stay. The stream is copied into (concurrency + 1) part buffers
 *   that are reused once their part is stored, so a save holds a fixed
 *   amount of memory and leaves no per-part garbage; a stream of one part
 *   or less is a single PutObject.
 * - `get` reads parallel ranges (the part size, at most 8 MiB each;
 *   `transferConcurrency` in flight) pinned to the ETag, through `fetch`
 *   (Deno's native HTTP client), fed in order into the stream: memory is
 *   bounded by (concurrency + 1) × range size.
 * - `stat` is a HEAD; `list` pages ListObjectsV2; {@link S3Backend.deleteMany}
 *   batches DeleteObjects (with the Content-MD5 S3-compatible stores want).
 * - Checksums are computed only when required (`WHEN_REQUIRED`), so stores
 *   without the newer flexible checksums work.
 * - Every request runs through the shared retry ({@link withRetry}): full
 *   jitter, `Retry-After`, a warn line per retry naming the object, the
 *   part or range, the attempt and the wait. The SDK's own retries are off.
 * - `backendOperationTimeout` is an idle timeout per request, in both
 *   directions: a part upload touches it as the socket takes its bytes, a
 *   range download as bytes arrive; no progress for that long aborts the
 *   request (destroying its socket, also a pooled keep-alive one) and
 *   retries it. Never a cap on a whole transfer.
 *
 * @module
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type ObjectCannedACL,
  PutObjectCommand,
  S3Client,
  type ServerSideEncryption,
  UploadPartCommand,
} from "../../deps/aws_client_s3.ts";
import { FetchHttpHandler } from "../../deps/smithy_fetch_http_handler.ts";
import { NodeHttpHandler } from "../../deps/smithy_node_http_handler.ts";
import { createHash } from "node:crypto";
import {
  type Backend,
  NotFoundError,
  type ObjectInfo,
  type ObjectMeta,
  StorageError,
  type TransferOptions,
} from "../backend.ts";
import { encodeMeta } from "../metadata.ts";
import {
  type Attempt,
  DEFAULT_RETRY_POLICY,
  parseRetryAfter,
  type RetryPolicy,
  withRetry,
} from "../transfer/retry.ts";
import { orderedRanges, type RangeSink, streamRange } from "../transfer/ranges.ts";
import { restartingGet } from "../transfer/restart.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";
import { Readable } from "node:stream";
import type { Logger } from "../../log.ts";
import { type AwsCredentialIdentityProvider, isCredentialError } from "./credentials.ts";
import { announceS3, type S3Setup } from "./open.ts";
import { DELETE_BATCH, DOWNLOAD_RANGE_SIZE, partSizeFor } from "./parts.ts";
import { multipartPut } from "./upload.ts";
import {
  httpStatus,
  isCode,
  normalizeMeta,
  retryAfterHeader,
  s3Error,
  shortMessage,
  transient,
} from "./errors.ts";

export { normalizeEndpoint } from "./credentials.ts";
export { createS3Backend } from "./open.ts";

const MiB = 1024 * 1024;
export { DELETE_BATCH, DOWNLOAD_RANGE_SIZE, MAX_PARTS, MIN_PART_SIZE, partSizeFor } from "./parts.ts";

/** Explicit options of {@link S3Backend}; {@link createS3Backend} derives them from the settings. */
export interface S3BackendOptions {
  /** A configured client (credentials, region, endpoint, path style, checksum mode). */
  client: S3Client;
  bucket: string;
  /** For messages: the endpoint (or `AWS S3`). */
  endpointLabel?: string;
  /** Upload part size in bytes (default 16 MiB; at least 5 MiB). */
  partSize?: number;
  /** Download range size in bytes (default: the part size, at most {@link DOWNLOAD_RANGE_SIZE}). */
  rangeSize?: number;
  /** Parts or ranges in flight per transfer (default 4). */
  concurrency?: number;
  /** Largest object to support: the part size grows so {@link MAX_PARTS} parts cover it (default 50 GiB). */
  maxObjectSize?: number;
  /** MaxKeys per ListObjectsV2 page (default 1000; tests use a small value to exercise paging). */
  listPageSize?: number;
  /** Canned ACL for uploads. */
  acl?: string;
  /** Server-side encryption: `AES256`, `aws:kms` or `aws:kms:dsse`. */
  sse?: string;
  /** KMS key for `aws:kms`/`aws:kms:dsse`. */
  sseKmsKeyId?: string;
  /** S3 Express directory bucket: list prefixes are cut at the last `/` and filtered here. */
  directoryBucket?: boolean;
  /** Idle timeout per request in ms, also for a download range's body (default 180 000). */
  idleTimeoutMs?: number;
  /** Retries per request after the first attempt (network errors, idle timeouts, 408/429/5xx; default 4). */
  retries?: number;
  /** First retry delay bound in ms (doubles per retry, full jitter; default 500). */
  retryBaseMs?: number;
  /** What to check when credentials are refused (for messages). */
  authHint?: string;
  log?: Logger;
}

/**
 * One S3 bucket as a {@link Backend}.
 *
 * @example
 * ```ts
 * const client = new S3Client({ region: "us-east-1", endpoint: "http://127.0.0.1:8080", forcePathStyle: true });
 * const backend = new S3Backend({ client, bucket: "cache", partSize: 5 * 2 ** 20, listPageSize: 10 });
 * await backend.put("key/node_modules", stream, { cicache_format: "zstd" });
 * ```
 */
export class S3Backend implements Backend {
  readonly kind = "s3";
  readonly client: S3Client;
  readonly bucket: string;
  readonly partSize: number;
  readonly rangeSize: number;
  readonly concurrency: number;
  readonly listPageSize: number;
  readonly #o: S3BackendOptions;
  readonly #policy: RetryPolicy;

  constructor(options: S3BackendOptions) {
    this.#o = options;
    this.client = options.client;
    this.bucket = options.bucket;
    this.partSize = partSizeFor(options.partSize ?? 16 * MiB, options.maxObjectSize ?? 51200 * MiB);
    this.rangeSize = Math.max(1, options.rangeSize ?? Math.min(this.partSize, DOWNLOAD_RANGE_SIZE));
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.listPageSize = Math.min(1000, Math.max(1, options.listPageSize ?? 1000));
    this.#policy = {
      ...DEFAULT_RETRY_POLICY,
      retries: Math.max(0, options.retries ?? DEFAULT_RETRY_POLICY.retries),
      baseMs: options.retryBaseMs ?? DEFAULT_RETRY_POLICY.baseMs,
      idleMs: options.idleTimeoutMs ?? 180_000,
    };
  }

  /**
   * Sends one request through the shared retry: each attempt gets its own
   * signal (idle timeout, caller's abort), retryable failures are retried
   * with a warn line. `fn` defaults to a plain `client.send`.
   */
  #send<T>(
    op: string,
    object: string | undefined,
    signal: AbortSignal | undefined,
    fn: (attempt: Attempt) => Promise<T>,
    part?: string,
  ): Promise<T> {
    return withRetry(fn, {
      policy: this.#policy,
      retryable: transient,
      retryAfterMs: (err) => parseRetryAfter(retryAfterHeader(err)),
      signal,
      log: this.#o.log,
      what: {
        backend: this.kind,
        op,
        ...(object !== undefined ? { object } : {}),
        ...(part ? { part } : {}),
      },
    });
  }

  /**
   * Checks the bucket answers with these credentials: an unknown bucket, a
   * refused key or an unreachable endpoint fail here, before any transfer.
   * A plain "access denied" passes (the identity may have object rights only).
   */
  async check(): Promise<void> {
    try {
      await this.#send(
        "connect",
        undefined,
        undefined,
        ({ signal }) =>
          this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }),
      );
    } catch (err) {
      const status = httpStatus(err);
      if (!isCredentialError(err) && (status === 403 || status === 400 || status === 301)) {
        // HEAD has no body: ask again with a GET to learn the error code.
        try {
          await this.#send(
            "connect",
            undefined,
            undefined,
            ({ signal }) =>
              this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, MaxKeys: 1 }), {
                abortSignal: signal,
              }),
          );
          return;
        } catch (err2) {
          const mapped = this.#error(err2, "connect");
          if (mapped.code === "AccessDenied") {
            this.#o.log?.debug("s3: may not list the bucket; continuing with object operations", {
              bucket: this.bucket,
            });
            return;
          }
          throw mapped;
        }
      }
      throw this.#error(err, "connect");
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    try {
      const head = await this.#send(
        "stat",
        name,
        undefined,
        ({ signal }) =>
          this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: name }), {
            abortSignal: signal,
          }),
      );
      return {
        name,
        size: Number(head.ContentLength ?? 0),
        modified: head.LastModified ?? new Date(0),
        meta: normalizeMeta(head.Metadata),
      };
    } catch (err) {
      if (httpStatus(err) === 404 && !isCode(err, "NoSuchBucket")) return null;
      throw await this.#diagnose(err, "stat", name);
    }
  }

  get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return restartingGet(() => this.#getOnce(name, options), {
      log: this.#o.log,
      backend: this.kind,
      object: name,
    });
  }

  /** One download pinned to the ETag the HEAD saw. */
  async #getOnce(name: string, options: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    const info = await this.#head(name);
    const { size, etag } = info;
    return orderedRanges({
      size,
      rangeSize: this.rangeSize,
      concurrency: this.concurrency,
      signal: options.signal,
      read: (start, count, sink, signal) =>
        this.#readRange(name, start, start + count - 1, etag, sink, signal),
    });
  }

  async put(name: string, body: ReadableStream<Uint8Array>, meta: ObjectMeta, options: TransferOptions = {}) {
    options.signal?.throwIfAborted();
    const o = this.#o;
    const params = {
      Bucket: this.bucket,
      Key: name,
      Metadata: encodeMeta(meta),
      ContentType: "application/octet-stream",
      ...(o.acl && !o.directoryBucket ? { ACL: o.acl as ObjectCannedACL } : {}),
      ...(o.sse ? { ServerSideEncryption: o.sse as ServerSideEncryption } : {}),
      ...(o.sse && o.sse !== "AES256" && o.sseKmsKeyId ? { SSEKMSKeyId: o.sseKmsKeyId } : {}),
    };
    // Leftovers of a killed save of this key (best effort: the identity may not list uploads).
    await this.sweepStale(name).catch((err) =>
      this.#o.log?.debug("s3: could not look for stale multipart uploads", {
        object: name,
        error: shortMessage(err),
      })
    );
    const plan = { object: name, partSize: this.partSize, concurrency: this.concurrency };
    await multipartPut(body, options, plan, {
      single: async (data, outer) => {
        await this.#send("put", name, outer, ({ signal, touch }) =>
          this.client.send(
            new PutObjectCommand({
              ...params,
              // deno-lint-ignore no-explicit-any
              Body: progressBody(data, touch) as any,
              ContentLength: data.length,
            }),
            { abortSignal: signal },
          ));
      },
      create: async (outer) => {
        const created = await this.#send(
          "put",
          name,
          outer,
          ({ signal }) => this.client.send(new CreateMultipartUploadCommand(params), { abortSignal: signal }),
        );
        if (!created.UploadId) throw new Error("CreateMultipartUpload returned no UploadId");
        return created.UploadId;
      },
      part: async (UploadId, PartNumber, data, outer) => {
        const out = await this.#send(
          "put",
          name,
          outer,
          ({ signal, touch }) =>
            this.client.send(
              new UploadPartCommand({
                Bucket: this.bucket,
                Key: name,
                UploadId,
                PartNumber,
                // deno-lint-ignore no-explicit-any
                Body: progressBody(data, touch) as any,
                ContentLength: data.length,
              }),
              { abortSignal: signal },
            ),
          `part ${PartNumber}`,
        );
        if (!out.ETag) throw new Error(`part ${PartNumber} came back without an ETag`);
        return out.ETag;
      },
      complete: async (UploadId, parts, outer) => {
        const Parts = parts.map((p) => ({ PartNumber: p.number, ETag: p.etag }));
        await this.#send("put", name, outer, ({ signal }) =>
          this.client.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.bucket,
              Key: name,
              UploadId,
              MultipartUpload: { Parts },
            }),
            { abortSignal: signal },
          ), "complete");
      },
      abort: (uploadId) => this.#abortUpload(name, uploadId),
      error: (err) => this.#error(err, "put", name),
    });
  }

  /**
   * Aborts multipart uploads under `prefix` started more than `olderThanMs`
   * ago: what saves killed with `kill -9` left (invisible parts that are
   * billed until a lifecycle rule removes them). Younger ones may belong to
   * a running save and stay. `put` sweeps its own key, flush its prefix.
   * Returns how many were aborted.
   *
   * @example
   * ```ts
   * await backend.sweepStale("key/");
   * ```
   */
  async sweepStale(prefix: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    let removed = 0;
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.#send("sweep", prefix, undefined, ({ signal }) =>
        this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker, UploadIdMarker }),
          { abortSignal: signal },
        ));
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || !u.Initiated) continue;
        // (0 sweeps all: the store's clock may run ahead of ours)
        if (olderThanMs > 0 && Date.now() - u.Initiated.getTime() < olderThanMs) continue;
        await this.#abortUpload(u.Key, u.UploadId);
        removed++;
      }
      if (!page.IsTruncated) break;
      KeyMarker = page.NextKeyMarker;
      UploadIdMarker = page.NextUploadIdMarker;
    }
    if (removed > 0) {
      this.#o.log?.info("s3: aborted stale multipart uploads of killed saves", { prefix, uploads: removed });
    }
    return removed;
  }

  /** Aborts a multipart upload (its stored parts are discarded); a failure is logged, not thrown. */
  async #abortUpload(name: string, uploadId: string): Promise<void> {
    try {
      await this.#send("put", name, undefined, ({ signal }) =>
        this.client.send(
          new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: name, UploadId: uploadId }),
          { abortSignal: signal },
        ), "abort");
    } catch (err) {
      this.#o.log?.warn(
        "s3: could not abort a failed multipart upload; its parts stay until a lifecycle rule removes them",
        {
          object: name,
          error: shortMessage(err),
        },
      );
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Directory buckets only list prefixes that end in "/": ask for the enclosing "directory" and filter.
    const query = this.#o.directoryBucket ? prefix.slice(0, prefix.lastIndexOf("/") + 1) : prefix;
    let token: string | undefined;
    do {
      let page;
      try {
        const continuation = token;
        page = await this.#send("list", prefix, undefined, ({ signal }) =>
          this.client.send(
            new ListObjectsV2Command({
              Bucket: this.bucket,
              Prefix: query || undefined,
              MaxKeys: this.listPageSize,
              ContinuationToken: continuation,
            }),
            { abortSignal: signal },
          ));
      } catch (err) {
        throw this.#error(err, "list", prefix);
      }
      for (const obj of page.Contents ?? []) {
        if (obj.Key === undefined || !obj.Key.startsWith(prefix)) continue;
        yield {
          name: obj.Key,
          size: Number(obj.Size ?? 0),
          modified: obj.LastModified ?? new Date(0),
          meta: {},
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(name: string): Promise<void> {
    try {
      await this.#send(
        "delete",
        name,
        undefined,
        ({ signal }) =>
          this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: name }), {
            abortSignal: signal,
          }),
      );
    } catch (err) {
      if (httpStatus(err) === 404 && !isCode(err, "NoSuchBucket")) return;
      throw this.#error(err, "delete", name);
    }
  }

  /**
   * Deletes many objects with DeleteObjects, {@link DELETE_BATCH} per call
   * (for flush). Missing objects are fine; any per-object error is thrown
   * after the batch, naming the first failed object.
   *
   * @example
   * ```ts
   * const names = [];
   * for await (const o of backend.list("key/")) names.push(o.name);
   * await backend.deleteMany(names);
   * ```
   */
  async deleteMany(names: readonly string[]): Promise<void> {
    for (let i = 0; i < names.length; i += DELETE_BATCH) {
      const batch = names.slice(i, i + DELETE_BATCH);
      let out;
      try {
        out = await this.#send("delete", batch[0], undefined, ({ signal }) =>
          this.client.send(
            new DeleteObjectsCommand({
              Bucket: this.bucket,
              Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
            }),
            { abortSignal: signal },
          ));
      } catch (err) {
        throw this.#error(err, "delete", batch[0]);
      }
      const failed = (out.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
      if (failed.length > 0) {
        const first = failed[0];
        const fake = Object.assign(new Error(first.Message ?? first.Code ?? "delete failed"), {
          name: first.Code ?? "Error",
          Code: first.Code,
          $metadata: { httpStatusCode: first.Code === "AccessDenied" ? 403 : 500 },
        });
        throw this.#error(fake, "delete", first.Key ?? batch[0]);
      }
    }
  }

  close(): Promise<void> {
    this.client.destroy();
    return Promise.resolve();
  }

  async #head(name: string): Promise<{ size: number; etag?: string }> {
    try {
      const head = await this.#send(
        "get",
        name,
        undefined,
        ({ signal }) =>
          this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: name }), {
            abortSignal: signal,
          }),
      );
      return { size: Number(head.ContentLength ?? 0), etag: head.ETag };
    } catch (err) {
      if (httpStatus(err) === 404 && !isCode(err, "NoSuchBucket")) {
        throw new NotFoundError(`no object "${name}" in bucket "${this.bucket}"`, {
          backend: this.kind,
          op: "get",
          object: name,
          cause: err,
        });
      }
      throw await this.#diagnose(err, "get", name);
    }
  }

  /**
   * Reads bytes [start, end] through the shared retry (idle timeout on the
   * body too), pinned to the ETag, into `sink` as the connection delivers
   * them (each attempt starts the range over).
   */
  async #readRange(
    name: string,
    start: number,
    end: number,
    etag: string | undefined,
    sink: RangeSink,
    signal: AbortSignal,
  ): Promise<void> {
    try {
      return await this.#send("get", name, signal, async (attempt) => {
        const res = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: name,
            Range: `bytes=${start}-${end}`,
            IfMatch: etag,
          }),
          { abortSignal: attempt.signal },
        );
        attempt.touch();
        const body = res.Body as unknown as { transformToWebStream(): ReadableStream<Uint8Array> };
        await streamRange(body.transformToWebStream(), end - start + 1, sink, attempt.signal, attempt.touch);
      }, `range ${start}-${end}`);
    } catch (err) {
      if (signal.aborted) throw signal.reason ?? err;
      if (httpStatus(err) === 412) {
        throw new StorageError("Failed", "the object was replaced during the download: restore again", {
          backend: this.kind,
          op: "get",
          object: name,
          cause: err,
        });
      }
      throw this.#error(err, "get", name);
    }
  }

  /** HEAD errors carry no body: a 403 is asked again by GET of one byte, to tell a bad key from a denial. */
  async #diagnose(err: unknown, op: string, name: string): Promise<StorageError> {
    if (httpStatus(err) === 403 || httpStatus(err) === 400) {
      try {
        await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: name, Range: "bytes=0-0" }), {
          abortSignal: AbortSignal.timeout(this.#policy.idleMs || 60_000),
        });
      } catch (err2) {
        if (httpStatus(err2) !== 404 && httpStatus(err2) !== 416) return this.#error(err2, op, name);
      }
    }
    return this.#error(err, op, name);
  }

  /** Maps an SDK or network error to a typed {@link StorageError} whose message says what to fix. */
  #error(err: unknown, op: string, object?: string): StorageError {
    return s3Error(err, op, object, {
      bucket: this.bucket,
      endpointLabel: this.#o.endpointLabel,
      authHint: this.#o.authHint,
      attempts: this.#policy.retries + 1,
    });
  }
}

/** Marks a request body whose SHA-256 we computed, so SigV4 signs it without reading the stream. */
const PAYLOAD_SHA256 = Symbol("cicachePayloadSha256");
/** Slice of a part handed to the socket at a time: each one taken is progress for the idle watch. */
const WRITE_SLICE = 256 * 1024;

/**
 * A request body for the Node HTTP handler that feeds `data` in slices as
 * the socket takes them (the handler pipes it, with backpressure), calling
 * `touch` for each: an upload whose peer stops reading stops touching, and
 * the idle timeout aborts it. A plain buffer is written in one `end()` and
 * shows no progress at all. Its SHA-256 travels with it for the signature.
 */
function progressBody(data: Uint8Array, touch: () => void): Readable {
  let offset = 0;
  const body = new Readable({
    highWaterMark: WRITE_SLICE,
    read() {
      touch();
      if (offset >= data.length) return void this.push(null);
      const end = Math.min(data.length, offset + WRITE_SLICE);
      this.push(data.subarray(offset, end));
      offset = end;
    },
  });
  return Object.assign(body, { [PAYLOAD_SHA256]: createHash("sha256").update(data).digest("hex") });
}

/**
 * The client's HTTP handler: ranged GETs (the bulk of a download) go through `fetch`, Deno's native
 * HTTP client, whose body arrives as web stream chunks without the `node:http` layer's copies and
 * Node-to-web stream conversion (a third less peak memory, somewhat less CPU); everything else keeps
 * the Node handler, whose socket idle timeout suits uploads (`fetch` with a request body buffers and
 * copies it, and has no idle timeout). The fetch handler's timeout covers the wait for the response
 * headers; the backend watches the body itself.
 */
class RangeFetchHandler {
  constructor(readonly node: NodeHttpHandler, readonly fetch: FetchHttpHandler) {}

  handle(
    ...[request, options]: Parameters<FetchHttpHandler["handle"]>
  ): ReturnType<FetchHttpHandler["handle"]> {
    const ranged = request.method === "GET" &&
      Object.keys(request.headers).some((h) => h.toLowerCase() === "range");
    return ranged ? this.fetch.handle(request, options) : this.node.handle(request, options);
  }

  updateHttpClientConfig(...args: Parameters<NodeHttpHandler["updateHttpClientConfig"]>): void {
    this.node.updateHttpClientConfig(...args);
  }

  httpHandlerConfigs(): ReturnType<NodeHttpHandler["httpHandlerConfigs"]> {
    return this.node.httpHandlerConfigs();
  }

  destroy(): void {
    this.node.destroy();
    this.fetch.destroy();
  }
}

/** The S3Client configuration {@link createS3Backend} uses (exported for tests and the bench). */
export interface S3ClientSettings {
  region: string;
  endpoint?: string;
  pathStyle: boolean;
  credentials: AwsCredentialIdentityProvider;
  idleTimeoutMs: number;
  concurrency: number;
  /** Where the SDK's own warnings go (never raw to stderr): our warn lines, the SDK named. */
  log?: Logger;
}

/** The SDK's logger interface, routed into ours: its warnings become our warn lines. */
function sdkLogger(log: Logger | undefined) {
  const warn = (...args: unknown[]) =>
    log?.warn(`aws sdk: ${args.map((a) => (a instanceof Error ? a.message : String(a))).join(" ")}`);
  // Per-request info/debug records carry whole inputs: not for our log.
  return { trace: () => {}, debug: () => {}, info: () => {}, warn, error: warn };
}

/**
 * Creates an S3 client for S3-compatible stores: checksums only when an
 * operation requires them, Content-MD5 on DeleteObjects, an idle timeout per
 * request and the SDK's standard retries with exponential backoff.
 *
 * @example
 * ```ts
 * const client = makeS3Client({ region: "us-east-1", endpoint: "http://127.0.0.1:8080", pathStyle: true,
 *   credentials: async () => ({ accessKeyId: "test:tester", secretAccessKey: "testing" }),
 *   idleTimeoutMs: 60_000, concurrency: 4 });
 * ```
 */
export function makeS3Client(c: S3ClientSettings): S3Client {
  const client = new S3Client({
    region: c.region,
    ...(c.endpoint ? { endpoint: c.endpoint } : {}),
    forcePathStyle: c.pathStyle,
    credentials: c.credentials,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    // Retries and timeouts are ours (withRetry in the backend): one attempt per send, no SDK timers.
    maxAttempts: 1,
    logger: sdkLogger(c.log),
    requestHandler: new RangeFetchHandler(
      new NodeHttpHandler({
        connectionTimeout: Math.min(c.idleTimeoutMs || 30_000, 30_000),
        httpAgent: { keepAlive: true, maxSockets: Math.max(50, c.concurrency * 4) },
        httpsAgent: { keepAlive: true, maxSockets: Math.max(50, c.concurrency * 4) },
        logger: sdkLogger(c.log),
      }),
      new FetchHttpHandler({}),
    ),
  });
  client.middlewareStack.add(
    (next) => (args) => {
      const request = (args as { request?: { headers: Record<string, string>; body?: unknown } }).request;
      const hash = (request?.body as { [PAYLOAD_SHA256]?: string } | undefined)?.[PAYLOAD_SHA256];
      if (request && hash) request.headers["x-amz-content-sha256"] = hash;
      return next(args);
    },
    { step: "build", name: "cicachePayloadHash", priority: "low" },
  );
  client.middlewareStack.add(
    (next, context) => (args) => {
      const request = (args as { request?: { headers: Record<string, string>; body?: unknown } }).request;
      if (context.commandName === "DeleteObjectsCommand" && request && typeof request.body === "string") {
        request.headers["content-md5"] = createHash("md5").update(request.body).digest("base64");
      }
      return next(args);
    },
    { step: "build", name: "cicacheContentMd5", priority: "low" },
  );
  return client;
}

/**
 * Builds the SDK backend for resolved settings (see `open.ts`, which also
 * decides when the fetch-based metadata path serves instead): detects S3
 * Express directory buckets, logs the backend line (with `announce`), and
 * with `check` checks the bucket answers.
 *
 * @example
 * ```ts
 * const backend = await sdkS3Backend(await resolveS3Setup(settings, log), log, { check: true, announce: true });
 * ```
 */
export async function sdkS3Backend(
  setup: S3Setup,
  log: Logger,
  options: { check: boolean; announce: boolean },
): Promise<S3Backend> {
  let sse = setup.sse;
  const client = makeS3Client({
    region: setup.region,
    endpoint: setup.endpoint,
    pathStyle: setup.pathStyle,
    credentials: setup.credentials.provider,
    idleTimeoutMs: setup.idleTimeoutMs,
    concurrency: setup.concurrency,
    log,
  });
  let directoryBucket = false;
  if (setup.bucket.endsWith("--x-s3")) {
    try {
      const head = await client.send(new HeadBucketCommand({ Bucket: setup.bucket }));
      directoryBucket = head.BucketLocationType === "AvailabilityZone" ||
        head.BucketLocationType === "LocalZone";
    } catch {
      directoryBucket = false; // as the Go plugin: any error means a general purpose bucket
    }
  }
  if (directoryBucket) {
    if (setup.acl) log.warn("s3: directory buckets do not support ACLs: PLUGIN_ACL is ignored");
    if (sse === "aws:kms:dsse") {
      log.warn("s3: directory buckets do not support aws:kms:dsse encryption: PLUGIN_ENCRYPTION is ignored");
      sse = "";
    }
  }
  const backend = new S3Backend({
    client,
    bucket: setup.bucket,
    endpointLabel: setup.endpointLabel,
    partSize: setup.partSize,
    concurrency: setup.concurrency,
    maxObjectSize: setup.maxObjectSize,
    acl: setup.acl || undefined,
    sse: sse || undefined,
    sseKmsKeyId: setup.sseKmsKeyId || undefined,
    directoryBucket,
    idleTimeoutMs: setup.idleTimeoutMs || 180_000,
    authHint: setup.credentials.hint,
    log,
  });
  if (options.announce) announceS3(setup, log, backend.partSize, directoryBucket);
  if (options.check) {
    try {
      await backend.check();
    } catch (err) {
      client.destroy();
      throw err;
    }
  }
  return backend;
}
