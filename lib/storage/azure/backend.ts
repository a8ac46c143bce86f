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
import { formatBytes, type Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  type Backend,
  InvalidSettingsError,
  NotFoundError,
  type ObjectInfo,
  type ObjectMeta,
  StorageError,
  TooLargeError,
  type TransferOptions,
  UnavailableError,
} from "../backend.ts";
import {
  backoffDelay,
  IdleTimeoutError,
  parseRetryAfter,
  sleep as waitFor,
  withRetry,
} from "../transfer/retry.ts";
import { decodeMeta, encodeMeta } from "../metadata.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";
import { readRange, ShortReadError } from "../transfer/body.ts";
import { restartingGet } from "../transfer/restart.ts";
import { type AzureAuthInfo, connectAzure, containerName } from "./auth.ts";

export { type AzureAuthInfo, connectAzure, containerName } from "./auth.ts";

const KIND = "azure";
const MiB = 1024 * 1024;
/** Azure's limit on blocks in one block blob. */
export const AZURE_MAX_BLOCKS = 50_000;
/** Azure's limit on one block (4000 MiB). */
export const AZURE_MAX_BLOCK_SIZE = 4000 * MiB;

/**
 * Largest default download range: 8 MiB ranges read as fast as 16 MiB ones, and with `concurrency`
 * of them in flight plus the one being consumed they hold half the memory.
 */
export const DOWNLOAD_RANGE_SIZE = 8 * MiB;

/** Access tiers the backend accepts. */
export type AzureAccessTier = "Hot" | "Cool" | "Cold";

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

interface BlockRef {
  id: string;
  size: number;
}

/** What an Azure SDK error looks like, as far as the mapping below cares. */
interface SdkError {
  name?: string;
  message?: string;
  code?: string;
  statusCode?: number;
  errorResponse?: { error?: string; errorDescription?: string };
  cause?: unknown;
}

/** A throttling or unavailable answer's `Retry-After` (SDK errors keep the response; ours carry it). */
function retryAfterOf(err: unknown): string | undefined {
  const e = err as {
    response?: { headers?: { get?(name: string): string | undefined } };
    retryAfter?: string;
  };
  return e?.retryAfter ?? e?.response?.headers?.get?.("retry-after") ?? undefined;
}

class AttemptTimeout extends Error {
  constructor(ms: number) {
    super(`no progress for ${ms} ms`);
    this.name = "AttemptTimeout";
  }
}

const RETRIABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const NETWORK_CODES = [
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "ESOCKETTIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNABORTED",
  "REQUEST_SEND_ERROR",
];
const AUTH_FAILED_CODES = new Set([
  "AuthenticationFailed",
  "InvalidAuthenticationInfo",
  "NoAuthenticationInformation",
  "ExpiredToken",
]);
const DENIED_CODES = new Set([
  "AuthorizationFailure",
  "AuthorizationPermissionMismatch",
  "AuthorizationResourceTypeMismatch",
  "AuthorizationServiceMismatch",
  "AuthorizationProtocolMismatch",
  "AuthorizationSourceIPMismatch",
  "InsufficientAccountPermissions",
  "KeyBasedAuthenticationNotPermitted",
]);

/** Errors of `@azure/identity` (and MSAL underneath) when a token cannot be obtained. */
const IDENTITY_ERRORS = new Set([
  "AuthenticationError",
  "AuthenticationRequiredError",
  "CredentialUnavailableError",
  "AggregateAuthenticationError",
  "ServerError",
  "ClientAuthError",
]);

function sdkError(err: unknown): SdkError {
  return (typeof err === "object" && err !== null ? err : { message: String(err) }) as SdkError;
}

/** First line of an SDK message (Azure appends RequestId/Time lines). */
function firstLine(text: string | undefined): string {
  return (text ?? "").split("\n")[0].trim();
}

/** The network error code of `err` or of any of its causes. */
function networkCode(err: unknown): string | undefined {
  let cur: unknown = err;
  for (let depth = 0; cur && depth < 5; depth++) {
    const e = sdkError(cur);
    const text = `${e.code ?? ""} ${e.message ?? ""}`;
    const code = [...NETWORK_CODES, "ENOTFOUND", "CERT_", "UNABLE_TO_VERIFY", "SELF_SIGNED", "certificate"]
      .find((c) => text.includes(c));
    if (code && code !== "REQUEST_SEND_ERROR") return code;
    cur = e.cause;
  }
  const e = sdkError(err);
  return e.code === "REQUEST_SEND_ERROR" ? "REQUEST_SEND_ERROR" : undefined;
}

function isRetriable(err: unknown): boolean {
  if (err instanceof AttemptTimeout || err instanceof IdleTimeoutError || err instanceof ShortReadError) {
    return true;
  }
  if (err instanceof StorageError) return false;
  const e = sdkError(err);
  if (e.statusCode !== undefined && RETRIABLE_STATUS.has(e.statusCode)) return true;
  if (e.statusCode !== undefined && e.statusCode > 0) return false;
  const code = networkCode(err);
  return code !== undefined && code !== "ENOTFOUND" && !/CERT|VERIFY|SELF_SIGNED|certificate/.test(code);
}

/** What an operation does, for "may not …" messages. */
function verbOf(op: string): string {
  return op === "get" || op === "stat"
    ? "read blobs"
    : op === "list"
    ? "list blobs"
    : op === "connect"
    ? "use the container"
    : op === "delete"
    ? "delete blobs"
    : "write blobs";
}

/**
 * The first block size of an upload: at least `requested`, grown (to a
 * whole MiB, at most 4000 MiB) so that `maxBlocks` blocks hold
 * `maxObjectSize`, like S3's part size.
 *
 * @example
 * ```ts
 * blockSizeFor(16 * 2 ** 20, 51200 * 2 ** 20);    // 16 MiB: 50 000 × 16 MiB ≥ 50 GiB
 * blockSizeFor(16 * 2 ** 20, 2_000_000 * 2 ** 20); // 40 MiB
 * ```
 */
export function blockSizeFor(requested: number, maxObjectSize = 0, maxBlocks = AZURE_MAX_BLOCKS): number {
  const needed = Math.ceil(maxObjectSize / maxBlocks / MiB) * MiB;
  return Math.min(Math.max(requested, needed), AZURE_MAX_BLOCK_SIZE);
}

/**
 * The size of block `index` of an upload whose first blocks have `base`
 * bytes: the size doubles each time half of the remaining block budget is
 * used (after 25 000 blocks, 37 500, …), up to 4000 MiB. A stream longer
 * than planned so still fits: 16 MiB blocks reach about 3 TiB instead of
 * stopping at 781 GiB; memory grows only for such archives.
 *
 * @example
 * ```ts
 * blockSizeAt(0, 16 * 2 ** 20);      // 16 MiB
 * blockSizeAt(25_000, 16 * 2 ** 20); // 32 MiB
 * ```
 */
export function blockSizeAt(index: number, base: number, maxBlocks = AZURE_MAX_BLOCKS): number {
  const remaining = maxBlocks - index;
  if (remaining <= 0) return base;
  const doublings = Math.floor(Math.log2(maxBlocks / remaining));
  return Math.min(base * 2 ** doublings, Math.max(base, AZURE_MAX_BLOCK_SIZE));
}

/** Block ids: same length for every block of a blob, unique per upload so concurrent saves never mix. */
function blockId(uploadId: string, index: number): string {
  return btoa(`${uploadId}-${String(index).padStart(6, "0")}`);
}

/** REST API version of the ranged reads (the one the SDK speaks). */
const AZURE_API_VERSION = "2026-10-06";
/** OAuth scope of Azure Storage data-plane tokens. */
const STORAGE_SCOPE = "https://storage.azure.com/.default";

/** A failed ranged read as the SDK would report it: status and the service's error code. */
async function responseError(res: Response): Promise<Error> {
  const text = await res.text().catch(() => "");
  const code = res.headers.get("x-ms-error-code") ?? /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? undefined;
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? (text.slice(0, 300) || res.statusText);
  return Object.assign(new Error(`${res.status}${code ? ` ${code}` : ""}: ${message}`), {
    statusCode: res.status,
    code,
    retryAfter: res.headers.get("retry-after") ?? undefined,
  });
}

/** A `fetch` network failure, tagged with the Node-style code the retry and error mapping look for. */
function networkFailure(err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  const code = /refused/i.test(message)
    ? "ECONNREFUSED"
    : /dns|lookup|resolve/i.test(message)
    ? "ENOTFOUND"
    : /certificate|tls|ssl/i.test(message)
    ? "CERT_UNTRUSTED"
    : "ECONNRESET";
  return Object.assign(new Error(message, { cause: err }), { code });
}

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
   * Creates the container when it is missing. An identity that may not
   * create containers but may list an existing one still works (as the Go
   * plugin: try to create, on any refusal probe by listing one blob). A
   * container-scoped SAS (`sr=c`, the usual least-privilege token) can never
   * create one, so it goes straight to the probe. A container that is being
   * deleted (409 `ContainerBeingDeleted`; Azure takes up to about a minute)
   * is waited for with backoff, up to the operation timeout.
   */
  async ensureContainer(): Promise<void> {
    let createError: unknown;
    if (this.#sasParam("sr") === "c") {
      createError = "a container SAS (sr=c) cannot create containers";
    } else {
      createError = await this.#createContainer();
      if (createError === undefined) return;
      // Unreachable or refused outright: probing would only repeat the same wait.
      if (createError instanceof UnavailableError || createError instanceof AuthFailedError) {
        throw createError;
      }
    }
    try {
      await this.#call(
        "connect",
        undefined,
        undefined,
        (signal) =>
          this.#containerClient.listBlobsFlat({ abortSignal: signal }).byPage({ maxPageSize: 1 }).next(),
      );
      this.#log?.debug("not creating the container: it exists and can be listed", {
        container: this.container,
        create_error: createError instanceof Error ? createError.message : String(createError),
      });
    } catch (probeError) {
      // Listing says why: a missing container (then the create error tells why it could
      // not be made), a refused credential, an unknown account, an unreachable endpoint.
      if (probeError instanceof NotFoundError && sdkError(probeError.cause).code === "ContainerNotFound") {
        throw new NotFoundError(
          `container "${this.container}" does not exist in storage account ${this.auth.accountName} ` +
            `(${this.auth.serviceUrl}) and could not be created (${
              typeof createError === "string" ? createError : this.#shortCause(createError)
            }): create it, ` +
            `or give the identity a role that may create containers (Storage Blob Data Contributor on the ` +
            `account), or check PLUGIN_CONTAINER`,
          { backend: KIND, op: "connect", cause: createError },
        );
      }
      throw probeError;
    }
  }

  /**
   * Creates the container: `undefined` when it was created or already exists, else the (mapped) refusal.
   * While the container is being deleted, waits with backoff up to the operation timeout.
   */
  async #createContainer(): Promise<unknown> {
    const limitMs = this.#timeoutMs > 0 ? this.#timeoutMs : 180_000;
    const started = Date.now();
    for (let wait = 0;; wait++) {
      try {
        await this.#call(
          "connect",
          undefined,
          undefined,
          (signal) => this.#containerClient.create({ abortSignal: signal }),
        );
        this.#log?.info("created the azure container", { container: this.container });
        return undefined;
      } catch (err) {
        const cause = sdkError(err instanceof StorageError ? err.cause : err);
        if (cause.code === "ContainerBeingDeleted") {
          const elapsed = Date.now() - started;
          const delay = Math.min(
            backoffDelay(wait, { retries: 0, baseMs: 1000, capMs: 10_000, idleMs: 0 }),
            limitMs - elapsed,
          );
          if (delay <= 0) {
            return new UnavailableError(
              `container "${this.container}" of storage account ${this.auth.accountName} is being deleted ` +
                `(409 ContainerBeingDeleted) and was still being deleted after ${
                  Math.round(elapsed / 1000)
                } s: ` +
                `Azure needs up to about a minute to delete a container; retry later, raise ` +
                `PLUGIN_BACKEND_OPERATION_TIMEOUT, or use another PLUGIN_CONTAINER`,
              { backend: KIND, op: "connect", cause: err },
            );
          }
          this.#log?.info("the azure container is being deleted; waiting to create it again", {
            container: this.container,
            wait_ms: Math.round(delay),
          });
          await waitFor(delay);
          continue;
        }
        if (cause.code === "ContainerAlreadyExists" || (cause.statusCode === 409 && !cause.code)) {
          return undefined;
        }
        return err;
      }
    }
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
    const internal = new AbortController();
    const onAbort = () => internal.abort(outer!.reason);
    outer?.addEventListener("abort", onAbort, { once: true });
    const rangeSize = this.rangeSize;
    const ranges = Math.ceil(size / rangeSize);
    let next = 0;
    const inflight: Promise<Uint8Array[]>[] = [];

    const fetchRange = (index: number): Promise<Uint8Array[]> => {
      const offset = index * rangeSize;
      const count = Math.min(rangeSize, size - offset);
      const promise = this.#call("get", name, internal.signal, async (signal, touch) => {
        const { url, headers } = await this.#rangeRequest(blob, offset, count, etag);
        const res = await fetch(url, { headers, signal }).catch((err) => {
          throw signal.aborted ? err : networkFailure(err);
        });
        touch();
        if (res.status !== 206 && !(res.status === 200 && count === size)) throw await responseError(res);
        // Read under the attempt's signal: an abort must end a read pending on a stalled connection.
        return await readRange(res.body!, count, signal, touch).catch((err) => {
          throw signal.aborted || err instanceof ShortReadError ? err : networkFailure(err);
        });
      }, `range ${offset}-${offset + count - 1}`);
      promise.catch(() => {}); // observed when its turn comes; avoid an unhandled rejection before that
      return promise;
    };

    const cleanup = () => outer?.removeEventListener("abort", onAbort);
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        while (inflight.length < this.concurrency && next < ranges) inflight.push(fetchRange(next++));
        const first = inflight.shift();
        if (first === undefined) {
          cleanup();
          controller.close();
          return;
        }
        try {
          for (const chunk of await first) controller.enqueue(chunk);
        } catch (err) {
          internal.abort(err);
          cleanup();
          throw err;
        }
      },
      cancel: (reason) => {
        internal.abort(reason ?? new Error("download cancelled"));
        cleanup();
      },
    }, { highWaterMark: 0 });
  }

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions = {},
  ): Promise<void> {
    const outer = options.signal;
    const blob = this.#containerClient.getBlockBlobClient(name);
    const metadata = encodeMeta(meta);
    const common = {
      metadata,
      tier: this.#accessTier,
      blobHTTPHeaders: { blobContentType: "application/octet-stream" },
    };
    const uploadId = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
    const internal = new AbortController();
    const onAbort = () => internal.abort(outer!.reason);
    if (outer?.aborted) throw outer.reason;
    outer?.addEventListener("abort", onAbort, { once: true });
    const reader = body.getReader();
    // An abort ends a pending read (cancel resolves it as done); the loop then throws the reason.
    // (No Promise.race against a long-lived promise here: each race would keep its chunk alive.)
    internal.signal.addEventListener("abort", () => reader.cancel(internal.signal.reason).catch(() => {}), {
      once: true,
    });
    const blocks: BlockRef[] = [];
    const inflight = new Set<Promise<void>>();
    let total = 0;
    // The block size grows with the block count (blockSizeAt), so a stream longer than planned still fits.
    let blockSize = this.partSize;
    let buffer: Uint8Array = new Uint8Array(blockSize);
    let fill = 0;

    // Block buffers are reused once their block is staged: (concurrency + 1) × part size, allocated once.
    const pool: Uint8Array[] = [];
    const dispatch = async (data: Uint8Array) => {
      if (blocks.length >= this.#maxBlocks) throw this.#tooLarge(name);
      // Staging promises never reject (a failure aborts `internal`), so waiting on them is safe.
      while (inflight.size >= this.concurrency) await Promise.race(inflight);
      if (internal.signal.aborted) throw internal.signal.reason;
      const ref = { id: blockId(uploadId, blocks.length), size: data.length };
      blocks.push(ref);
      const staged: Promise<void> = this.#call(
        "put",
        name,
        internal.signal,
        (signal, touch) =>
          blob.stageBlock(ref.id, data, data.length, { abortSignal: signal, onProgress: touch }),
        `block ${blocks.length}`,
      )
        .then(() => void (data.length === blockSize && pool.push(data)), (err) => internal.abort(err))
        .finally(() => inflight.delete(staged));
      inflight.add(staged);
    };

    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (internal.signal.aborted) throw internal.signal.reason;
        if (done) break;
        total += value.length;
        let offset = 0;
        while (offset < value.length) {
          const n = Math.min(blockSize - fill, value.length - offset);
          buffer.set(value.subarray(offset, offset + n), fill);
          fill += n;
          offset += n;
          if (fill === blockSize) {
            await dispatch(buffer);
            const grown = blockSizeAt(blocks.length, this.partSize, this.#maxBlocks);
            if (grown !== blockSize) {
              blockSize = grown;
              pool.length = 0; // smaller buffers are of no further use
            }
            buffer = pool.pop() ?? new Uint8Array(blockSize);
            fill = 0;
          }
        }
        options.release?.(value); // copied into block buffers: the producer may reuse it
      }
      if (blocks.length === 0) {
        // Smaller than one block: a single Put Blob, atomic by itself.
        const data = buffer.subarray(0, fill);
        await this.#call(
          "put",
          name,
          internal.signal,
          (signal, touch) =>
            blob.upload(data, data.length, { ...common, abortSignal: signal, onProgress: touch }),
        );
        return;
      }
      if (fill > 0) await dispatch(buffer.subarray(0, fill));
      while (inflight.size > 0) await Promise.race(inflight);
      if (internal.signal.aborted) throw internal.signal.reason;
      await this.#verifyStaged(name, blob, blocks, total, internal.signal);
      await this.#call(
        "put",
        name,
        internal.signal,
        (signal) => blob.commitBlockList(blocks.map((b) => b.id), { ...common, abortSignal: signal }),
      );
    } catch (err) {
      const reason = internal.signal.aborted ? internal.signal.reason : err;
      internal.abort(reason);
      await Promise.allSettled([...inflight]);
      reader.cancel(reason).catch(() => {});
      throw reason;
    } finally {
      outer?.removeEventListener("abort", onAbort);
    }
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

  /** Checks the byte count and the service's uncommitted block list before the commit makes the blob visible. */
  async #verifyStaged(
    name: string,
    blob: ReturnType<ContainerClient["getBlockBlobClient"]>,
    blocks: BlockRef[],
    total: number,
    signal: AbortSignal,
  ): Promise<void> {
    const staged = blocks.reduce((sum, b) => sum + b.size, 0);
    if (staged !== total) {
      throw new StorageError(
        "Failed",
        `read ${total} bytes from the archive stream but staged ${staged}: not committing the block list ` +
          `(the previous object, if any, is left as it was)`,
        { backend: KIND, op: "put", object: name },
      );
    }
    const list = await this.#call(
      "put",
      name,
      signal,
      (s) => blob.getBlockList("uncommitted", { abortSignal: s }),
    );
    const onService = new Map((list.uncommittedBlocks ?? []).map((b) => [b.name, b.size]));
    const bad = blocks.findIndex((b) => onService.get(b.id) !== b.size);
    if (bad >= 0) {
      const seen = onService.get(blocks[bad].id);
      throw new StorageError(
        "Failed",
        `block ${bad} of ${blocks.length} is ${
          seen === undefined ? "missing" : `${seen} bytes instead of ${blocks[bad].size}`
        } ` +
          `on the service (another save to the same key may have committed meanwhile): not committing; ` +
          `the save can simply be retried`,
        { backend: KIND, op: "put", object: name },
      );
    }
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
    const e = sdkError(cause);
    return e.statusCode === 404 && e.code !== "ContainerNotFound" && e.code !== "ResourceNotFound";
  }

  #shortCause(err: unknown): string {
    const cause = err instanceof StorageError ? err.cause : err;
    const e = sdkError(cause);
    return [e.statusCode, e.code, firstLine(e.message)].filter((x) => x !== undefined && x !== "").join(" ");
  }

  #tooLarge(name: string): TooLargeError {
    const mib = this.partSize / MiB;
    let capacity = 0;
    for (let i = 0; i < this.#maxBlocks; i++) capacity += blockSizeAt(i, this.partSize, this.#maxBlocks);
    return new TooLargeError(
      `the archive is larger than one Azure block blob can hold: ${this.#maxBlocks} blocks starting at ${mib} MiB ` +
        `and growing to at most 4000 MiB hold ${formatBytes(capacity)}. Raise ` +
        `PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB (or PLUGIN_PART_SIZE_MB, now ${mib}) or cache less under this mount`,
      { backend: KIND, op: "put", object: name },
    );
  }

  /** Turns an SDK/identity/network error into a typed error whose message says what to fix. */
  #mapError(op: string, object: string | undefined, err: unknown, attempts: number): StorageError {
    const context = { backend: KIND, op, object, cause: err };
    const e = sdkError(err);
    const auth = this.auth;
    const where = `${auth.serviceUrl}${auth.serviceUrlSource ? ` (from ${auth.serviceUrlSource})` : ""}`;

    if (err instanceof AttemptTimeout) {
      return new UnavailableError(
        `${where} did not respond (${err.message}, ${attempts} attempts): check the network or raise ` +
          `PLUGIN_BACKEND_OPERATION_TIMEOUT`,
        context,
      );
    }
    if (IDENTITY_ERRORS.has(e.name ?? "")) {
      return new AuthFailedError(this.#identityFailure(e), context);
    }
    if (e.statusCode === undefined || e.statusCode === 0) {
      const code = networkCode(err);
      if (code === "ENOTFOUND") {
        const host = new URL(auth.serviceUrl).host;
        if (!auth.serviceUrlSource) {
          return new NotFoundError(
            `storage account "${auth.accountName}" not found: ${host} does not resolve. Check PLUGIN_ACCOUNT_NAME ` +
              `(and AZURE_BLOB_STORAGE_URL for sovereign clouds), and that DNS works on this machine`,
            context,
          );
        }
        return new UnavailableError(
          `cannot resolve ${host} of ${where}: check the endpoint and DNS`,
          context,
        );
      }
      if (code && /CERT|VERIFY|SELF_SIGNED|certificate/.test(code)) {
        return new UnavailableError(
          `the TLS certificate of ${where} is not trusted (${firstLine(e.message)}): for a private CA set ` +
            `NODE_EXTRA_CA_CERTS to its PEM file`,
          context,
        );
      }
      if (code) {
        return new UnavailableError(
          `cannot reach ${where} (${code}, ${attempts} attempts): check the network, proxy or firewall and the ` +
            `endpoint`,
          context,
        );
      }
      return new StorageError("Failed", firstLine(e.message) || String(err), context);
    }

    const status = e.statusCode;
    const code = e.code ?? "";
    const detail = `${status}${code ? ` ${code}` : ""}`;
    if (status === 404 || code === "ContainerNotFound" || code === "ResourceNotFound") {
      if (code === "ContainerNotFound") {
        return new NotFoundError(
          `container "${this.container}" does not exist in storage account ${auth.accountName} (${where}): ` +
            `check PLUGIN_CONTAINER`,
          context,
        );
      }
      if (code === "ResourceNotFound" && object === undefined) {
        return new NotFoundError(
          `storage account "${auth.accountName}" not found at ${where} (${detail}): check PLUGIN_ACCOUNT_NAME ` +
            `and PLUGIN_ENDPOINT`,
          context,
        );
      }
      return new NotFoundError(`no such object (${detail})`, context);
    }
    // A shared key or SAS that does not verify is AuthenticationFailed on Azure; Azurite says
    // AuthorizationFailure with Azure's AuthenticationFailed message. HEAD responses carry no code.
    const keyBased = auth.method === "shared-key" || auth.method === "sas" ||
      auth.method === "connection-string";
    const authenticationMessage = /^Server failed to authenticate the request/.test(firstLine(e.message));
    if (
      AUTH_FAILED_CODES.has(code) || status === 401 || (status === 403 && authenticationMessage) ||
      (keyBased && status === 403 && code === "")
    ) {
      return new AuthFailedError(this.#credentialRejected(detail), context);
    }
    if (code === "AuthorizationFailure" || code === "AuthorizationSourceIPMismatch") {
      return new AccessDeniedError(this.#authorizationFailure(op, detail), context);
    }
    if (code === "ContainerBeingDeleted") {
      return new UnavailableError(
        `container "${this.container}" of storage account ${auth.accountName} is being deleted (${detail}): ` +
          `Azure needs up to about a minute; retry later or use another PLUGIN_CONTAINER`,
        context,
      );
    }
    if (DENIED_CODES.has(code) || status === 403) {
      return new AccessDeniedError(this.#permissionDenied(op, detail), context);
    }
    if (status === 413 || code === "RequestBodyTooLarge" || code === "BlockCountExceedsLimit") {
      return new TooLargeError(
        `the service refused the size (${detail}): lower PLUGIN_PART_SIZE_MB below 4000 or cache less`,
        context,
      );
    }
    if (status === 412 || code === "ConditionNotMet") {
      return new StorageError(
        "Failed",
        `the object changed while it was being read (${detail}): another save replaced it; retry the restore`,
        context,
      );
    }
    if (RETRIABLE_STATUS.has(status)) {
      return new UnavailableError(
        `${where} kept failing (${detail}: ${
          firstLine(e.message)
        }, ${attempts} attempts): the service is busy ` +
          `or down; retry later or raise AZURE_BLOB_MAX_RETRY_REQUESTS`,
        context,
      );
    }
    return new StorageError("Failed", `${detail}: ${firstLine(e.message)}`, context);
  }

  #identityFailure(e: SdkError): string {
    const auth = this.auth;
    const text = e.errorResponse?.errorDescription ?? e.message ?? "";
    // Entra's reason: "AADSTS700211: No matching federated identity record …", without trace ids.
    const aad = /AADSTS\d+:.*?(?=\s+Trace ID:|\s+-\s+Correlation ID:|$)/s.exec(text)?.[0];
    const aadsts = /AADSTS\d+/.exec(text)?.[0];
    const reason = (aad ?? firstLine(text)).replace(/\s+/g, " ").trim();
    const who = `client ${auth.clientId} in tenant ${auth.tenantId}`;
    if (auth.method === "oidc") {
      const expired = aadsts === "AADSTS700024" || /expired|valid time range/i.test(reason);
      return `Entra ID rejected the OIDC token from ${auth.secretSource} for ${who}` +
        `${expired ? " (the token has expired)" : ""}: ${
          reason || e.name
        }. The token comes from the CI system ` +
        `(Harness sets PLUGIN_AZURE_OIDC_TOKEN / PLUGIN_OIDC_TOKEN_ID for the step): make sure it is fresh, and ` +
        `that the app registration or managed identity has a federated credential whose issuer, subject and ` +
        `audience (api://AzureADTokenExchange) match the token`;
    }
    if (auth.method === "service-principal") {
      return `Entra ID rejected the service principal ${who}: ${reason || e.name}. Check ` +
        `${auth.secretSource} (the secret's value, not its id; secrets expire) and PLUGIN_AZURE_CLIENT_ID / ` +
        `PLUGIN_AZURE_TENANT_ID`;
    }
    return `authentication failed: ${reason || e.name}`;
  }

  #credentialRejected(detail: string): string {
    const auth = this.auth;
    switch (auth.method) {
      case "shared-key":
        return `storage account ${auth.accountName} rejected the account key (${detail}): check that ` +
          `${auth.secretSource} is a current key of this account (key1 or key2 on its "Access keys" page) and ` +
          `that PLUGIN_ACCOUNT_NAME names the same account (or the storage firewall blocks this network)`;
      case "sas":
        return `storage account ${auth.accountName} rejected the SAS token (${detail}): it is expired, revoked, ` +
          `malformed or for another account; issue a new one into ${auth.secretSource}`;
      case "connection-string":
        return `storage account ${auth.accountName} rejected the credentials of the connection string ` +
          `(${detail}): copy a current one into ${auth.secretSource}`;
      default:
        return `storage account ${auth.accountName} rejected the access token obtained for client ` +
          `${auth.clientId} (${detail}): check that the tenant ${auth.tenantId} is the storage account's tenant`;
    }
  }

  /**
   * 403 AuthorizationFailure: the credential was accepted, the request was not: the storage firewall
   * (virtual network / IP rules, private endpoint only), or a SAS whose permissions or scope do not cover it.
   */
  #authorizationFailure(op: string, detail: string): string {
    const auth = this.auth;
    const sp = this.#sasParam("sp");
    const sr = this.#sasParam("sr");
    const sas = sp !== undefined || sr !== undefined
      ? `; the SAS in use has permissions sp=${sp ?? "(none)"}${sr ? ` and resource sr=${sr}` : ""}: it ` +
        `needs sp=racwdl (read, add, create, write, delete, list) on this container or account (a container ` +
        `SAS, sr=c, cannot create the container: create it beforehand)`
      : "; with a SAS token, also check its permissions (sp=racwdl) and scope (sr=c or an account SAS)";
    const request = `${verbOf(op)} (container "${this.container}", ${detail})`;
    return `storage account ${auth.accountName} refused the request of this ${auth.method} credential to ` +
      `${request}. The credential itself is valid: check the ` +
      `account's firewall and virtual network rules (Networking: public access disabled, or enabled from ` +
      `selected networks and IPs that do not include this runner; private endpoint only)${sas}`;
  }

  #permissionDenied(op: string, detail: string): string {
    const auth = this.auth;
    const what = verbOf(op);
    const target = `container "${this.container}" of storage account ${auth.accountName}`;
    if (auth.method === "sas") {
      return `the SAS token may not ${what} in ${target} (${detail}): issue it with read, add, create, write, ` +
        `delete and list permissions (sp=racwdl) for this container, or check the storage firewall`;
    }
    if (auth.method === "oidc" || auth.method === "service-principal") {
      return `client ${auth.clientId} may not ${what} in ${target} (${detail}): assign it the ` +
        `"Storage Blob Data Contributor" role on the container or the storage account (Reader roles cannot ` +
        `save or flush), or check the storage firewall`;
    }
    return `this credential may not ${what} in ${target} (${detail}): the storage account's firewall or ` +
      `settings (shared key access disabled?) refuse it`;
  }
}

/**
 * Creates the azure backend from the settings: picks the credential (first
 * match wins, see `azure_auth.ts`), resolves the endpoint and container,
 * logs which method is used (never the secret), and creates the container
 * when missing.
 *
 * @example
 * ```ts
 * const backend = await createAzureBackend(settings, log);
 * for await (const o of backend.list("key/")) console.log(o.name);
 * ```
 */
export async function createAzureBackend(settings: Settings, log: Logger): Promise<Backend> {
  const container = containerName(settings);
  const { client, auth } = await connectAzure(settings, log);
  const partSize = settings.partSizeMb * MiB;
  if (settings.partSizeMb > 4000) {
    throw new InvalidSettingsError(
      `${
        describeSource(settings, "partSizeMb")
      }=${settings.partSizeMb} exceeds Azure's block size limit: use 1–4000`,
      { backend: KIND, op: "connect" },
    );
  }
  log.info("azure backend", {
    auth: auth.method,
    credential: auth.description,
    endpoint: auth.serviceUrl,
    container,
  });
  const backend = new AzureBackend({
    client,
    container,
    auth,
    partSize,
    maxObjectSize: settings.multipartMaxUploadSizeMb * MiB,
    concurrency: settings.transferConcurrency,
    maxRetries: settings.azureBlobMaxRetryRequests,
    timeoutMs: settings.backendOperationTimeout,
    accessTier: settings.azureAccessTier as AzureAccessTier | "",
    log,
  });
  await backend.ensureContainer();
  return backend;
}
