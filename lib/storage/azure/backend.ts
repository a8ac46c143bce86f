/**
 * Azure Blob Storage backend, on `@azure/storage-blob` and `@azure/identity`.
 *
 * - `put` reads the stream into blocks of the part size and stages up to
 *   `transferConcurrency` of them in parallel; the block list is committed
 *   only at the end, after the byte count and the service's list of staged
 *   blocks agree. A failed or aborted save commits nothing, so no partial
 *   blob becomes visible and an older blob under the name stays intact
 *   (staged blocks that are never committed are discarded by the service).
 *   A stream shorter than one block is sent in a single Put Blob.
 * - `get` reads ranges (the part size, at most 8 MiB) in parallel
 *   (`transferConcurrency` in flight) with `fetch`, authorized like the SDK
 *   would, and feeds them in order into the returned stream, with
 *   backpressure, so memory stays at about (concurrency + 1) × range size.
 *   Every range is pinned to the blob's ETag: a concurrent overwrite fails
 *   the download instead of mixing two versions.
 * - `stat` is a properties (HEAD) call, never a download; `list` pages with
 *   a prefix; `delete` ignores missing blobs.
 * - Every request has an idle timeout (`backendOperationTimeout`: no
 *   progress for that long) and is retried with exponential backoff
 *   (`AZURE_BLOB_MAX_RETRY_REQUESTS` retries) on network errors, timeouts,
 *   408, 429 and 5xx; it never caps a whole transfer.
 * - Failures become the typed errors of `backend.ts`, with messages that name
 *   the credential, setting or role to fix; no secret appears in them.
 *
 * Credential selection lives in `azure_auth.ts`.
 *
 * @module
 */
import {
  type BlobClient,
  BlobSASPermissions,
  type BlobServiceClient,
  type ContainerClient,
  StorageSharedKeyCredential,
} from "../../deps/azure_storage_blob.ts";
import type { Logger } from "../../log.ts";
import type { Settings } from "../../settings.ts";
import {
  type Backend,
  InvalidSettingsError,
  NotFoundError,
  type ObjectInfo,
  type ObjectMeta,
  StorageError,
  type TransferOptions,
} from "../backend.ts";
import { IdleTimeoutError, parseRetryAfter, withRetry } from "../transfer/retry.ts";
import { decodeMeta, encodeMeta } from "../metadata.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";
import { ShortReadError } from "../transfer/body.ts";
import { orderedRanges, type RangeSink, streamRange } from "../transfer/ranges.ts";
import { restartingGet } from "../transfer/restart.ts";
import { type AzureAuthInfo, connectAzure, containerName } from "./auth.ts";
import { ensureContainer } from "./container.ts";
import { blockPut } from "./upload.ts";
import {
  AttemptTimeout,
  azureError,
  blobMissing,
  isRetriable,
  networkFailure,
  responseError,
  retryAfterOf,
  shortCause,
} from "./errors.ts";

export { type AzureAuthInfo, connectAzure, containerName } from "./auth.ts";
export { createAzureBackend } from "./open.ts";
import { announceAzure } from "./open.ts";
import {
  AZURE_MAX_BLOCK_SIZE,
  AZURE_MAX_BLOCKS,
  type AzureAccessTier,
  blockSizeFor,
  DOWNLOAD_RANGE_SIZE,
} from "./blocks.ts";

const KIND = "azure";
const MiB = 1024 * 1024;
export {
  AZURE_MAX_BLOCK_SIZE,
  AZURE_MAX_BLOCKS,
  type AzureAccessTier,
  blockSizeAt,
  blockSizeFor,
  DOWNLOAD_RANGE_SIZE,
} from "./blocks.ts";

/** Options for {@link AzureBackend}; tests use small parts and pages. */
export interface AzureBackendOptions {
  /** The blob service client (any credential). */
  client: BlobServiceClient;
  /** Container holding the cache objects. */
  container: string;
  /** The credential in use, for error messages (default: described as a shared key of the client's account). */
  auth?: AzureAuthInfo;
  /** Block size for uploads, in bytes (default 16 MiB; grown to fit `maxObjectSize`, see {@link blockSizeFor}). */
  partSize?: number;
  /** Largest blob to plan for (`PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB`): the first blocks are sized to fit it. */
  maxObjectSize?: number;
  /** Range size for downloads, in bytes (default: the part size, at most {@link DOWNLOAD_RANGE_SIZE}). */
  rangeSize?: number;
  /** Blocks/ranges in flight per transfer (default 4). */
  concurrency?: number;
  /** Blobs per list page (default 1000; Azure's maximum is 5000). */
  listPageSize?: number;
  /** Retries per request after the first try (default 4). */
  maxRetries?: number;
  /** First retry delay in ms; doubles per retry, with jitter (default 500). */
  retryDelayMs?: number;
  /** Cap on one retry delay in ms (default 30 000). */
  maxRetryDelayMs?: number;
  /** Idle timeout per request in ms: no progress for this long aborts and retries the request; 0 = none (default 180 000). */
  timeoutMs?: number;
  /** Access tier of new blobs (default: the account's default). */
  accessTier?: AzureAccessTier | "";
  /** Block limit (default {@link AZURE_MAX_BLOCKS}; tests lower it). */
  maxBlocks?: number;
  /** Logger for retries (debug) and the one-time container notice. */
  log?: Logger;
}

/** REST API version of the ranged reads (the one the SDK speaks). */
const AZURE_API_VERSION = "2026-10-06";
/** OAuth scope of Azure Storage data-plane tokens. */
const STORAGE_SCOPE = "https://storage.azure.com/.default";

/**
 * The Azure Blob Storage backend.
 *
 * @example
 * ```ts
 * const client = BlobServiceClient.fromConnectionString(connectionString);
 * const backend = new AzureBackend({ client, container: "cicache", partSize: 4 * 1024 * 1024 });
 * await backend.ensureContainer();
 * await backend.put("key/node_modules", stream, { cicache_format: "zstd" });
 * ```
 */
export class AzureBackend implements Backend {
  readonly kind = KIND;
  readonly container: string;
  readonly auth: AzureAuthInfo;
  readonly partSize: number;
  readonly rangeSize: number;
  readonly concurrency: number;
  #client: BlobServiceClient;
  #containerClient: ContainerClient;
  #listPageSize: number;
  #maxRetries: number;
  #retryDelayMs: number;
  #maxRetryDelayMs: number;
  #timeoutMs: number;
  #accessTier?: AzureAccessTier;
  #maxBlocks: number;
  #log?: Logger;

  constructor(options: AzureBackendOptions) {
    this.#client = options.client;
    this.container = options.container;
    this.#containerClient = options.client.getContainerClient(options.container);
    this.auth = options.auth ?? {
      method: "shared-key",
      description: "client given by the caller",
      accountName: options.client.accountName,
      serviceUrl: options.client.url.split("?")[0].replace(/\/+$/, ""),
      serviceUrlSource: "",
      secretSource: "the account key",
    };
    this.#maxBlocks = options.maxBlocks ?? AZURE_MAX_BLOCKS;
    this.partSize = blockSizeFor(options.partSize ?? 16 * MiB, options.maxObjectSize, this.#maxBlocks);
    this.rangeSize = Math.max(1, options.rangeSize ?? Math.min(this.partSize, DOWNLOAD_RANGE_SIZE));
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.#listPageSize = options.listPageSize ?? 1000;
    this.#maxRetries = Math.max(0, options.maxRetries ?? 4);
    this.#retryDelayMs = options.retryDelayMs ?? 500;
    this.#maxRetryDelayMs = options.maxRetryDelayMs ?? 30_000;
    this.#timeoutMs = options.timeoutMs ?? 180_000;
    this.#accessTier = options.accessTier || undefined;
    this.#log = options.log;
    const requested = options.partSize ?? this.partSize;
    if (requested < 1 || requested > AZURE_MAX_BLOCK_SIZE) {
      throw new InvalidSettingsError(
        `part size ${requested} bytes is outside Azure's block size range: set PLUGIN_PART_SIZE_MB to 1–4000`,
        { backend: KIND, op: "connect" },
      );
    }
  }

  /**
   * Creates the container when it is missing, or probes that an existing
   * one may be used ({@link ensureContainer} in `container.ts`).
   */
  async ensureContainer(): Promise<void> {
    await ensureContainer({
      create: () =>
        this.#call(
          "connect",
          undefined,
          undefined,
          (signal) => this.#containerClient.create({ abortSignal: signal }),
        ),
      probe: () =>
        this.#call(
          "connect",
          undefined,
          undefined,
          (signal) =>
            this.#containerClient.listBlobsFlat({ abortSignal: signal }).byPage({ maxPageSize: 1 }).next(),
        ),
      context: { auth: this.auth, container: this.container, sasParam: (name) => this.#sasParam(name) },
      timeoutMs: this.#timeoutMs,
      log: this.#log,
    });
  }

  /** A parameter of the SAS in the client URL (`sr`, `sp`), or undefined without a SAS. */
  #sasParam(name: string): string | undefined {
    try {
      return new URL(this.#client.url).searchParams.get(name) ?? undefined;
    } catch {
      return undefined;
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    try {
      const props = await this.#call(
        "stat",
        name,
        undefined,
        (signal) => this.#containerClient.getBlobClient(name).getProperties({ abortSignal: signal }),
      );
      return {
        name,
        size: props.contentLength ?? 0,
        modified: props.lastModified ?? new Date(0),
        meta: decodeMeta(props.metadata),
      };
    } catch (err) {
      if (err instanceof NotFoundError && this.#blobMissing(err.cause)) return null;
      throw err;
    }
  }

  get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return restartingGet(() => this.#getOnce(name, options), { log: this.#log, backend: KIND, object: name });
  }

  /** One download pinned to the ETag the properties call saw. */
  async #getOnce(name: string, options: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    const outer = options.signal;
    const blob = this.#containerClient.getBlobClient(name);
    const props = await this.#call(
      "get",
      name,
      outer,
      (signal) => blob.getProperties({ abortSignal: signal }),
    );
    const size = props.contentLength ?? 0;
    const etag = props.etag;
    const read = (offset: number, count: number, sink: RangeSink, rangeSignal: AbortSignal) =>
      this.#call("get", name, rangeSignal, async (signal, touch) => {
        const { url, headers } = await this.#rangeRequest(blob, offset, count, etag);
        const res = await fetch(url, { headers, signal }).catch((err) => {
          throw signal.aborted ? err : networkFailure(err);
        });
        touch();
        if (res.status !== 206 && !(res.status === 200 && count === size)) throw await responseError(res);
        // Read under the attempt's signal: an abort must end a read pending on a stalled connection.
        await streamRange(res.body!, count, sink, signal, touch).catch((err) => {
          throw signal.aborted || err instanceof ShortReadError ? err : networkFailure(err);
        });
      }, `range ${offset}-${offset + count - 1}`);
    return orderedRanges({
      size,
      rangeSize: this.rangeSize,
      concurrency: this.concurrency,
      signal: outer,
      read,
    });
  }

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions = {},
  ): Promise<void> {
    const blob = this.#containerClient.getBlockBlobClient(name);
    const common = {
      metadata: encodeMeta(meta),
      tier: this.#accessTier,
      blobHTTPHeaders: { blobContentType: "application/octet-stream" },
    };
    const plan = {
      object: name,
      partSize: this.partSize,
      concurrency: this.concurrency,
      maxBlocks: this.#maxBlocks,
    };
    await blockPut(body, options, plan, {
      single: (data, outer) =>
        this.#call(
          "put",
          name,
          outer,
          (signal, touch) =>
            blob.upload(data, data.length, { ...common, abortSignal: signal, onProgress: touch }),
        ).then(() => {}),
      stage: (id, data, outer, index) =>
        this.#call(
          "put",
          name,
          outer,
          (signal, touch) =>
            blob.stageBlock(id, data, data.length, { abortSignal: signal, onProgress: touch }),
          `block ${index}`,
        ).then(() => {}),
      uncommitted: async (outer) => {
        const list = await this.#call(
          "put",
          name,
          outer,
          (s) => blob.getBlockList("uncommitted", { abortSignal: s }),
        );
        return new Map((list.uncommittedBlocks ?? []).map((b) => [b.name, b.size]));
      },
      commit: (ids, outer) =>
        this.#call(
          "put",
          name,
          outer,
          (signal) => blob.commitBlockList(ids, { ...common, abortSignal: signal }),
        )
          .then(() => {}),
    });
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let continuationToken: string | undefined;
    do {
      const token = continuationToken;
      const page = await this.#call("list", prefix, undefined, (signal) =>
        this.#containerClient
          .listBlobsFlat({ prefix, includeMetadata: true, abortSignal: signal })
          .byPage({ continuationToken: token, maxPageSize: this.#listPageSize })
          .next());
      if (page.done) return;
      for (const item of page.value.segment.blobItems) {
        yield {
          name: item.name,
          size: item.properties.contentLength ?? 0,
          modified: item.properties.lastModified,
          meta: decodeMeta(item.metadata),
        };
      }
      continuationToken = page.value.continuationToken || undefined;
    } while (continuationToken);
  }

  /**
   * Discards blobs under `prefix` that hold only uncommitted blocks staged more than `olderThanMs` ago: what
   * saves killed with `kill -9` left (invisible to `list`; the service drops them after 7 days, and a later
   * save of the same name discards them at its commit, but a key that is never saved again keeps them that
   * long). Each is committed empty only if no blob exists (If-None-Match: *), which discards its blocks, and
   * that empty blob is deleted at once (If-Match). Younger ones may belong to a running save and stay. Flush
   * calls it. Returns how many went; failures are logged, never thrown.
   *
   * @example
   * ```ts
   * await backend.sweepStale("key/");
   * ```
   */
  async sweepStale(prefix: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    const names = async (includeUncommitedBlobs: boolean) => {
      const out = new Map<string, Date | undefined>();
      let continuationToken: string | undefined;
      do {
        const token = continuationToken;
        const page = await this.#call("sweep", prefix, undefined, (signal) =>
          this.#containerClient
            .listBlobsFlat({ prefix, includeUncommitedBlobs, abortSignal: signal })
            .byPage({ continuationToken: token, maxPageSize: this.#listPageSize })
            .next());
        if (page.done) break;
        for (const item of page.value.segment.blobItems) out.set(item.name, item.properties.lastModified);
        continuationToken = page.value.continuationToken || undefined;
      } while (continuationToken);
      return out;
    };
    let removed = 0;
    try {
      const committed = await names(false);
      for (const [name, modified] of await names(true)) {
        if (committed.has(name) || !modified || Date.now() - modified.getTime() < olderThanMs) continue;
        const blob = this.#containerClient.getBlockBlobClient(name);
        try {
          const empty = await this.#call(
            "sweep",
            name,
            undefined,
            (signal) => blob.commitBlockList([], { conditions: { ifNoneMatch: "*" }, abortSignal: signal }),
          );
          await this.#call(
            "sweep",
            name,
            undefined,
            (signal) => blob.delete({ conditions: { ifMatch: empty.etag }, abortSignal: signal }),
          );
          removed++;
        } catch (err) {
          // 409/412: a save committed the name meanwhile; that commit discarded the blocks anyway.
          this.#log?.debug("azure: could not discard stale uncommitted blocks", {
            object: name,
            error: this.#shortCause(err),
          });
        }
      }
    } catch (err) {
      this.#log?.warn("azure: could not look for stale uncommitted blocks", {
        prefix,
        error: this.#shortCause(err),
      });
    }
    if (removed > 0) {
      this.#log?.info("azure: discarded stale uncommitted blocks of killed saves", {
        prefix,
        blobs: removed,
      });
    }
    return removed;
  }

  async delete(name: string): Promise<void> {
    try {
      await this.#call(
        "delete",
        name,
        undefined,
        (signal) =>
          this.#containerClient.getBlobClient(name).delete({
            abortSignal: signal,
            deleteSnapshots: "include",
          }),
      );
    } catch (err) {
      if (err instanceof NotFoundError && this.#blobMissing(err.cause)) return;
      throw err;
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * The URL and headers of one ranged read, authorized like the SDK would: a bearer token for Entra
   * credentials, a short-lived read SAS signed locally for a shared key, the SAS already in the URL
   * otherwise. The bytes then come through `fetch`, Deno's native HTTP client: the SDK's path through
   * `node:http` and Node streams costs more CPU and keeps far more garbage alive during a download.
   */
  async #rangeRequest(
    blob: BlobClient,
    offset: number,
    count: number,
    etag: string | undefined,
  ): Promise<{ url: string; headers: Record<string, string> }> {
    const headers: Record<string, string> = {
      "x-ms-version": AZURE_API_VERSION,
      "x-ms-range": `bytes=${offset}-${offset + count - 1}`,
      "x-ms-date": new Date().toUTCString(),
    };
    if (etag) headers["if-match"] = etag;
    const credential = this.#client.credential;
    if (credential instanceof StorageSharedKeyCredential) {
      const expiresOn = new Date(Date.now() + 60 * 60_000);
      return {
        url: await blob.generateSasUrl({ permissions: BlobSASPermissions.parse("r"), expiresOn }),
        headers,
      };
    }
    if ("getToken" in credential && typeof credential.getToken === "function") {
      const token = await credential.getToken(STORAGE_SCOPE);
      if (!token) throw new Error("the credential returned no access token for Azure Storage");
      headers.authorization = `Bearer ${token.token}`;
    }
    return { url: blob.url, headers };
  }

  /**
   * Runs one request through the shared retry ({@link withRetry}): an idle
   * timeout per attempt, full-jitter backoff, `Retry-After`, a warn line per
   * retry naming the object, the block or range, the attempt and the wait;
   * the last failure is mapped to a typed error.
   */
  async #call<T>(
    op: string,
    object: string | undefined,
    outer: AbortSignal | undefined,
    fn: (signal: AbortSignal, touch: () => void) => Promise<T>,
    part?: string,
  ): Promise<T> {
    let attempts = 0;
    try {
      return await withRetry(({ signal, touch }) => (attempts++, fn(signal, touch)), {
        policy: {
          retries: this.#maxRetries,
          baseMs: this.#retryDelayMs,
          capMs: this.#maxRetryDelayMs,
          idleMs: this.#timeoutMs,
        },
        retryable: isRetriable,
        retryAfterMs: (err) => parseRetryAfter(retryAfterOf(err)),
        signal: outer,
        log: this.#log,
        what: { backend: KIND, op, ...(object !== undefined ? { object } : {}), ...(part ? { part } : {}) },
      });
    } catch (raw) {
      if (outer?.aborted) throw outer.reason;
      if (raw instanceof StorageError) throw raw;
      const err = raw instanceof IdleTimeoutError ? new AttemptTimeout(raw.ms) : raw;
      throw this.#mapError(op, object, err, attempts);
    }
  }

  #blobMissing(cause: unknown): boolean {
    return blobMissing(cause);
  }

  #shortCause(err: unknown): string {
    return shortCause(err);
  }

  #mapError(op: string, object: string | undefined, err: unknown, attempts: number): StorageError {
    return azureError(op, object, err, attempts, {
      auth: this.auth,
      container: this.container,
      sasParam: (name) => this.#sasParam(name),
    });
  }
}

/**
 * Builds the SDK backend from the settings (see `open.ts`, which also
 * decides when the fetch-based metadata path serves instead): picks the
 * credential (first match wins, see `auth.ts`), logs which method is used
 * with `announce` (never the secret), and with `ensure` creates the
 * container when missing.
 *
 * @example
 * ```ts
 * const backend = await sdkAzureBackend(settings, log, { ensure: true, announce: true });
 * ```
 */
export async function sdkAzureBackend(
  settings: Settings,
  log: Logger,
  options: { ensure: boolean; announce: boolean },
): Promise<AzureBackend> {
  const container = containerName(settings);
  const { client, auth } = await connectAzure(settings, log);
  if (options.announce) announceAzure(auth, container, log);
  const backend = new AzureBackend({
    client,
    container,
    auth,
    partSize: settings.partSizeMb * MiB,
    maxObjectSize: settings.multipartMaxUploadSizeMb * MiB,
    concurrency: settings.transferConcurrency,
    maxRetries: settings.azureBlobMaxRetryRequests,
    timeoutMs: settings.backendOperationTimeout,
    accessTier: settings.azureAccessTier as AzureAccessTier | "",
    log,
  });
  if (options.ensure) await backend.ensureContainer();
  return backend;
}
