/**
 * The Google Cloud Storage backend.
 *
 * Everything talks the GCS JSON API directly with `fetch`: the metadata calls (`stat`, `list`, `delete`,
 * the start-up probe) are plain JSON requests, so a run never loads `@google-cloud/storage` (about 0.25 s of
 * start-up CPU before the first request); the data path, because the cache needs guarantees the SDK's
 * writer and reader do not give: bounded memory, a per-request (never whole-transfer) timeout with retries,
 * and an upload that can never commit a truncated object.
 *
 * - Upload: a resumable session, started with the object metadata (`cicache_*`), the predefined ACL and the
 *   customer-supplied key. Mode `chunked` (the default, for real GCS) sends `partSize` chunks, each retried
 *   and resumed from the offset GCS reports, reading the next chunk while one is in flight. Mode `single`
 *   streams the whole object in one request (what the stock firebase emulator supports; no resume). Either
 *   way the object is finalized only by the last request after the source stream ended; on a stream error
 *   or an abort the session is cancelled and no object appears (an older one stays intact).
 * - Download: ranged reads of `partSize` (at most 8 MiB), `concurrency` in flight, through the shared
 *   ordered-ranges scheduler (`transfer/ranges.ts`, as S3 and Azure): the head range is handed on chunk by
 *   chunk as it arrives, a retried range skips the bytes already handed on, and every range is pinned to
 *   the object generation the metadata call saw.
 *
 * @module
 */
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
import { decodeMeta, encodeMeta } from "../metadata.ts";
import { type GcsAuth, resolveGcsAuth } from "./auth.ts";
import type { Logger } from "../../log.ts";
import { type Attempt, parseRetryAfter, withRetry } from "../transfer/retry.ts";
import { orderedRanges, type RangeSink, streamRange } from "../transfer/ranges.ts";
import { restartingGet } from "../transfer/restart.ts";
import { sendBody } from "../transfer/send_body.ts";
import { describeSource, type Settings } from "../../settings.ts";

const MiB = 1024 * 1024;
const GRANULARITY = 256 * 1024;
const DEFAULT_API = "https://storage.googleapis.com";
/**
 * Largest default download range: 8 MiB ranges read as fast as 16 MiB ones, and with `concurrency`
 * of them in flight plus the one being consumed they hold half the memory.
 */
export const DOWNLOAD_RANGE_SIZE = 8 * MiB;

/** The predefined ACLs of the JSON API, and the gsutil spellings users may know. */
const ACLS: Record<string, string> = {
  authenticatedRead: "authenticatedRead",
  bucketOwnerFullControl: "bucketOwnerFullControl",
  bucketOwnerRead: "bucketOwnerRead",
  private: "private",
  projectPrivate: "projectPrivate",
  publicRead: "publicRead",
  "authenticated-read": "authenticatedRead",
  "bucket-owner-full-control": "bucketOwnerFullControl",
  "bucket-owner-read": "bucketOwnerRead",
  "project-private": "projectPrivate",
  "public-read": "publicRead",
};

/** Constructor options of {@link GcsBackend}; tests set small sizes so paging and chunking are exercised. */
export interface GcsBackendOptions {
  bucket: string;
  /** API root (`https://storage.googleapis.com`, or an emulator such as `http://127.0.0.1:9199`). */
  endpoint?: string;
  auth: GcsAuth;
  /** `chunked` (default): resumable upload in `partSize` chunks. `single`: one streamed request (emulators). */
  uploadMode?: "chunked" | "single";
  /** Upload chunk size in bytes (a multiple of 256 KiB). Default 16 MiB. */
  partSize?: number;
  /** Download range size in bytes. Default: the part size, at most {@link DOWNLOAD_RANGE_SIZE}. */
  rangeSize?: number;
  /** Ranged reads in flight per download. Default 4. */
  concurrency?: number;
  /** Objects per list page. Default 1000. */
  listPageSize?: number;
  /** Per-request (idle) timeout in ms; 0 disables it. Default 3 minutes. */
  requestTimeoutMs?: number;
  /** Retries of a failed request. Default 4. */
  retries?: number;
  /** First retry delay in ms, doubled each time. Default 500. */
  retryBaseMs?: number;
  /** Customer-supplied AES-256 key (32 bytes). */
  encryptionKey?: Uint8Array;
  /** Predefined ACL for uploads (JSON API name, e.g. `projectPrivate`). */
  predefinedAcl?: string;
  log?: Logger;
}

/** An HTTP answer that was not what the request expected. */
class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly retryAfter?: string) {
    super(message);
  }
}

/** Marks an error that came from the caller's source stream (rethrown unchanged by `put`). */
class SourceError extends Error {
  constructor(readonly original: unknown) {
    super("source stream failed");
  }
}

/**
 * A GCS bucket as a {@link Backend}.
 *
 * @example
 * ```ts
 * const backend = new GcsBackend({ bucket: "cache", endpoint: "http://127.0.0.1:9199", auth, uploadMode: "single" });
 * await backend.put("k/m", stream, { cicache_format: "tar" });
 * ```
 */
export class GcsBackend implements Backend {
  readonly kind = "gcs";
  readonly bucketName: string;
  readonly api: string;
  readonly #auth: GcsAuth;
  readonly #mode: "chunked" | "single";
  readonly #partSize: number;
  readonly #rangeSize: number;
  readonly #concurrency: number;
  readonly #pageSize: number;
  readonly #timeout: number;
  readonly #retries: number;
  readonly #retryBase: number;
  readonly #acl?: string;
  readonly #log?: Logger;
  #csek: Record<string, string> = {};
  readonly #csekReady: Promise<void>;

  constructor(o: GcsBackendOptions) {
    this.bucketName = o.bucket;
    this.api = (o.endpoint || DEFAULT_API).trim().replace(/\/+$/, "").replace(/\/storage\/v1$/, "");
    this.#auth = o.auth;
    this.#mode = o.uploadMode ?? "chunked";
    this.#partSize = Math.max(GRANULARITY, Math.ceil((o.partSize ?? 16 * MiB) / GRANULARITY) * GRANULARITY);
    this.#rangeSize = Math.max(1, o.rangeSize ?? Math.min(this.#partSize, DOWNLOAD_RANGE_SIZE));
    this.#concurrency = Math.max(1, o.concurrency ?? 4);
    this.#pageSize = o.listPageSize ?? 1000;
    this.#timeout = o.requestTimeoutMs ?? 180_000;
    this.#retries = o.retries ?? 4;
    this.#retryBase = o.retryBaseMs ?? 500;
    this.#acl = o.predefinedAcl;
    this.#log = o.log;
    this.#csekReady = o.encryptionKey ? this.#setKey(o.encryptionKey, o.log) : Promise.resolve();
  }

  async #setKey(key: Uint8Array, log?: Logger): Promise<void> {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", key as Uint8Array<ArrayBuffer>));
    const b64 = base64(key);
    log?.addSecret(b64);
    this.#csek = {
      "x-goog-encryption-algorithm": "AES256",
      "x-goog-encryption-key": b64,
      "x-goog-encryption-key-sha256": base64(digest),
    };
  }

  /**
   * Checks that the bucket exists and the credentials may list it (one list call with one result), so
   * a wrong bucket, credential or endpoint fails at start with a clear error.
   */
  async probe(): Promise<void> {
    try {
      await this.#retrying(
        "connect",
        "",
        undefined,
        (attempt) => this.#json(attempt, "GET", `${this.#objectsUrl()}?maxResults=1`),
      );
    } catch (err) {
      throw this.#mapError(err, "connect", undefined);
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    try {
      const md = await this.#retrying(
        "stat",
        name,
        undefined,
        (attempt) => this.#json(attempt, "GET", this.#objectUrl("storage/v1", name)),
        { raw: true },
      );
      return toInfo(md as RawMeta);
    } catch (err) {
      if (statusOf(err) === 404 && !isBucketMissing(err)) return null;
      throw this.#mapError(err, "stat", name);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let pageToken: string | undefined;
    do {
      let page;
      try {
        const token = pageToken;
        const query = new URLSearchParams({ prefix, maxResults: String(this.#pageSize) });
        if (token) query.set("pageToken", token);
        page = await this.#retrying(
          "list",
          prefix,
          undefined,
          (attempt) => this.#json(attempt, "GET", `${this.#objectsUrl()}?${query}`),
        ) as { items?: RawMeta[]; nextPageToken?: string };
      } catch (err) {
        throw this.#mapError(err, "list", prefix);
      }
      for (const f of page.items ?? []) yield toInfo(f);
      pageToken = page.nextPageToken || undefined;
    } while (pageToken);
  }

  async delete(name: string): Promise<void> {
    try {
      await this.#retrying(
        "delete",
        name,
        undefined,
        async (attempt) => {
          try {
            await this.#json(attempt, "DELETE", this.#objectUrl("storage/v1", name));
          } catch (err) {
            if (statusOf(err) !== 404 || isBucketMissing(err)) throw err;
          }
        },
      );
    } catch (err) {
      throw this.#mapError(err, "delete", name);
    }
  }

  // ── download ──────────────────────────────────────────────────────────

  get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return restartingGet(() => this.#getOnce(name, options), {
      log: this.#log,
      backend: "gcs",
      object: name,
    });
  }

  /** One download pinned to the generation the metadata call saw. */
  async #getOnce(name: string, options: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    let md: RawMeta;
    try {
      md = await this.#retrying(
        "get",
        name,
        undefined,
        (attempt) => this.#json(attempt, "GET", this.#objectUrl("storage/v1", name)),
        { raw: true },
      ) as RawMeta;
    } catch (err) {
      if (statusOf(err) === 404 && !isBucketMissing(err)) {
        throw new NotFoundError(`no object "${name}" in bucket "${this.bucketName}"`, {
          backend: "gcs",
          op: "get",
          object: name,
          cause: err,
        });
      }
      throw this.#mapError(err, "get", name);
    }
    await this.#csekReady;
    const size = Number(md.size ?? 0);
    const url = `${this.#objectUrl("download/storage/v1", name)}?alt=media` +
      (md.generation ? `&generation=${encodeURIComponent(md.generation)}` : "");
    return orderedRanges({
      size,
      rangeSize: this.#rangeSize,
      concurrency: this.#concurrency,
      signal: options.signal,
      read: (start, count, sink, signal) =>
        this.#readRange(url, name, start, count, sink, signal, md.generation),
    });
  }

  /**
   * Reads bytes [start, start + count) into `sink` as they arrive, retried. A 200 (a server that ignores
   * ranges) is taken only for the first range, and cut at its end.
   */
  async #readRange(
    url: string,
    name: string,
    start: number,
    count: number,
    sink: RangeSink,
    signal: AbortSignal,
    generation?: string,
  ): Promise<void> {
    const end = start + count - 1;
    await this.#retrying("get", name, signal, async ({ signal: attempt, touch }) => {
      const res = await fetch(url, {
        headers: { ...(await this.#auth.headers()), ...this.#csek, range: `bytes=${start}-${end}` },
        signal: attempt,
      });
      touch();
      if (res.status !== 206 && res.status !== 200) throw await httpError(res);
      // Every range must come from the generation the download started with: a server that ignores
      // `generation` (the emulator) would otherwise mix two saves into one stream.
      const served = res.headers.get("x-goog-generation");
      if (generation && served && served !== generation) {
        await res.body?.cancel();
        throw new StorageError("Failed", "the object was replaced during the download: restore again", {
          backend: "gcs",
          op: "get",
          object: name,
        });
      }
      if (res.status === 200 && start !== 0) {
        await res.body?.cancel();
        throw new HttpError(502, `range ${start}-${end} came back as the whole object`);
      }
      const body = res.status === 200 ? res.body!.pipeThrough(firstBytes(count)) : res.body!;
      // Read under the attempt's signal: an idle abort must end a read pending on a stalled connection.
      await streamRange(body, count, sink, attempt, touch);
    }, { part: `range ${start}-${end}` });
  }

  // ── upload ────────────────────────────────────────────────────────────

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions = {},
  ): Promise<void> {
    const { signal } = options;
    await this.#csekReady;
    let session: string | undefined;
    try {
      signal?.throwIfAborted();
      session = await this.#startSession(name, meta, signal);
      const size = this.#mode === "single"
        ? await this.#uploadSingle(session, name, body, signal)
        : await this.#uploadChunked(session, name, body, signal, options.release);
      this.#log?.debug("gcs upload finished", { object: name, bytes: size });
    } catch (err) {
      if (session) await this.#cancelSession(session);
      await body.cancel(err).catch(() => {});
      if (err instanceof SourceError) throw err.original;
      if (signal?.aborted) throw signal.reason ?? err;
      throw err instanceof StorageError ? err : this.#mapError(err, "put", name);
    }
  }

  async #startSession(name: string, meta: ObjectMeta, signal?: AbortSignal): Promise<string> {
    const params = new URLSearchParams({ uploadType: "resumable", name });
    if (this.#acl) params.set("predefinedAcl", this.#acl);
    const url = `${this.api}/upload/storage/v1/b/${encodeURIComponent(this.bucketName)}/o?${params}`;
    return await this.#retrying("put", name, signal, async ({ signal: attempt }) => {
      const res = await fetch(url, {
        method: "POST",
        headers: {
          ...(await this.#auth.headers()),
          ...this.#csek,
          "content-type": "application/json; charset=UTF-8",
          "x-upload-content-type": "application/octet-stream",
        },
        body: JSON.stringify({ name, contentType: "application/octet-stream", metadata: encodeMeta(meta) }),
        signal: attempt,
      });
      if (!res.ok) throw await httpError(res);
      await res.body?.cancel();
      const location = res.headers.get("location");
      if (!location) throw new HttpError(502, "the resumable upload answer has no Location header");
      return location;
    });
  }

  async #cancelSession(session: string): Promise<void> {
    try {
      const res = await fetch(session, {
        method: "DELETE",
        headers: await this.#auth.headers(),
        signal: AbortSignal.timeout(10_000),
      });
      await res.body?.cancel();
    } catch {
      // best effort: an unfinished session never becomes an object and expires after a week
    }
  }

  /** One streamed request (no resume); returns the byte count. */
  async #uploadSingle(
    session: string,
    name: string,
    body: ReadableStream<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<number> {
    let bytes = 0;
    let sourceError: unknown;
    const idle = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const touch = () => {
      if (this.#timeout <= 0) return;
      clearTimeout(timer);
      timer = setTimeout(
        () => idle.abort(new HttpError(408, `no progress for ${this.#timeout / 1000}s`)),
        this.#timeout,
      );
    };
    const reader = body.getReader();
    const counted = new ReadableStream<Uint8Array>({
      async pull(c) {
        let r;
        try {
          r = await reader.read();
        } catch (err) {
          sourceError = err;
          throw err;
        }
        touch();
        if (r.done) c.close();
        else {
          bytes += r.value.byteLength;
          c.enqueue(r.value);
        }
      },
      cancel: (reason) => reader.cancel(reason),
    });
    touch();
    try {
      const res = await fetch(session, {
        method: "PUT",
        headers: {
          ...(await this.#auth.headers()),
          ...this.#csek,
          "content-type": "application/octet-stream",
        },
        body: counted,
        signal: anySignal(signal, idle.signal),
      });
      if (!res.ok) throw await httpError(res);
      await this.#checkFinal(res, bytes, name);
      return bytes;
    } catch (err) {
      if (sourceError !== undefined) throw new SourceError(sourceError);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Chunked resumable upload; returns the byte count. Each source chunk is
   * handed to `release` once it was copied whole into the chunk buffers
   * (the producer may then reuse its memory).
   */
  async #uploadChunked(
    session: string,
    name: string,
    body: ReadableStream<Uint8Array>,
    signal?: AbortSignal,
    release?: (chunk: Uint8Array) => void,
  ): Promise<number> {
    const reader = body.getReader();
    let leftover: Uint8Array | undefined;
    /** The source chunk `leftover` is the rest of (released once that rest was copied too). */
    let owner: Uint8Array | undefined;
    const part = this.#partSize;
    // Two chunk buffers, reused in turn: one is on the wire while the next is read into the other.
    const buffers: Uint8Array[] = [];
    let turn = 0;
    const readChunk = async (): Promise<{ data: Uint8Array; end: boolean }> => {
      const buf = buffers[turn % 2] ??= new Uint8Array(part);
      turn++;
      let n = 0;
      while (n < part) {
        let piece = leftover;
        leftover = undefined;
        if (!piece) {
          let r;
          try {
            r = await reader.read();
          } catch (err) {
            throw new SourceError(err);
          }
          if (r.done) return { data: buf.subarray(0, n), end: true };
          piece = r.value;
          owner = r.value;
        }
        const take = Math.min(piece.byteLength, part - n);
        buf.set(piece.subarray(0, take), n);
        n += take;
        if (take < piece.byteLength) leftover = piece.subarray(take);
        else if (owner) {
          release?.(owner); // copied into the chunk buffers: the producer may reuse it
          owner = undefined;
        }
      }
      return { data: buf, end: false };
    };
    let offset = 0;
    let pending = readChunk();
    while (true) {
      const chunk = await pending;
      signal?.throwIfAborted();
      if (chunk.end) {
        const res = await this.#sendChunk(session, chunk.data, offset, true, signal, name);
        await this.#checkFinal(res, offset + chunk.data.length, name);
        return offset + chunk.data.length;
      }
      pending = readChunk();
      pending.catch(() => {});
      await this.#sendChunk(session, chunk.data, offset, false, signal, name);
      offset += chunk.data.length;
    }
  }

  /**
   * Sends one chunk through the shared retry, resuming from what GCS
   * persisted after a failure (a retry first asks the session). Final:
   * returns the answer. The chunk goes out in slices the socket takes one by
   * one ({@link sendBody}): each is progress for the idle timeout, so a
   * stalled upload is caught mid-chunk and a slow one is never cut.
   */
  async #sendChunk(
    session: string,
    data: Uint8Array,
    offset: number,
    final: boolean,
    signal: AbortSignal | undefined,
    name: string,
  ): Promise<Response> {
    let persisted = offset;
    const end = offset + data.length;
    return await this.#retrying("put", name, signal, async ({ signal: attempt, number, touch }) => {
      if (number > 0) {
        const status = await this.#queryPersisted(session, attempt);
        touch();
        if (status === "final" && final) return new Response(null, { status: 200 });
        if (typeof status === "number") {
          if (status < offset) {
            throw new HttpError(502, `GCS lost bytes before offset ${offset}: start again`);
          }
          persisted = Math.min(status, end);
          if (persisted === end && !final) return new Response(null, { status: 308 });
        }
      }
      while (true) {
        const rest = data.subarray(persisted - offset);
        const range = rest.length === 0
          ? `bytes */${end}`
          : `bytes ${persisted}-${end - 1}/${final ? end : "*"}`;
        const res = await sendBody(new URL(session), {
          method: "PUT",
          headers: { ...(await this.#auth.headers()), ...this.#csek, "content-range": range },
          body: rest,
          signal: attempt,
          touch,
        });
        if (res.ok && final) return res;
        if (res.status !== 308) throw await httpError(res);
        await res.body?.cancel();
        const now = persistedFrom(res.headers.get("range"));
        if (now < persisted) {
          throw new HttpError(502, `GCS persisted ${now} bytes, fewer than the ${persisted} it had`);
        }
        if (now >= end && !final) return res;
        if (now === persisted) {
          throw new HttpError(503, `GCS kept none of the bytes from offset ${persisted}`);
        }
        persisted = now; // partial: send the rest right away
      }
    }, { part: `chunk at ${offset}`, raw: true });
  }

  async #queryPersisted(session: string, signal: AbortSignal): Promise<number | "final"> {
    const res = await fetch(session, {
      method: "PUT",
      headers: { ...(await this.#auth.headers()), "content-range": "bytes */*" },
      signal,
      redirect: "manual",
    });
    await res.body?.cancel();
    if (res.ok) return "final";
    if (res.status === 308) return persistedFrom(res.headers.get("range"));
    throw await httpError(res);
  }

  async #checkFinal(res: Response, bytes: number, name: string): Promise<void> {
    const text = await res.text();
    let size: number | undefined;
    try {
      size = text ? Number(JSON.parse(text).size) : undefined;
    } catch {
      size = undefined;
    }
    if (size !== undefined && !Number.isNaN(size) && size !== bytes) {
      throw new StorageError("Failed", `GCS stored ${size} bytes but ${bytes} were sent`, {
        backend: "gcs",
        op: "put",
        object: name,
      });
    }
  }

  // ── shared ────────────────────────────────────────────────────────────

  /** The JSON API's object list URL of the bucket. */
  #objectsUrl(): string {
    return `${this.api}/storage/v1/b/${encodeURIComponent(this.bucketName)}/o`;
  }

  /**
   * One JSON API metadata request (object metadata, list, delete) with the
   * credentials' headers: the parsed answer (null for an empty one), or an
   * {@link HttpError} with GCS's message.
   */
  async #json(attempt: Attempt, method: string, url: string): Promise<unknown> {
    const res = await fetch(url, { method, headers: await this.#auth.headers(), signal: attempt.signal });
    attempt.touch();
    if (!res.ok) throw await httpError(res);
    const text = await res.text();
    return text === "" ? null : JSON.parse(text);
  }

  #objectUrl(base: string, name: string): string {
    return `${this.api}/${base}/b/${encodeURIComponent(this.bucketName)}/o/${encodeURIComponent(name)}`;
  }

  /**
   * Runs `fn` through the shared retry ({@link withRetry}): an idle timeout
   * per attempt, full-jitter backoff, `Retry-After`, a warn line per retry
   * naming the object, the chunk or range, the attempt and the wait. The
   * last failure is mapped to a typed error (unless `raw`: callers that
   * look at the status themselves).
   */
  async #retrying<T>(
    op: string,
    object: string,
    signal: AbortSignal | undefined,
    fn: (attempt: Attempt) => Promise<T>,
    options: { part?: string; raw?: boolean; object?: string } = {},
  ): Promise<T> {
    const named = options.object ?? object;
    try {
      return await withRetry(fn, {
        policy: { retries: this.#retries, baseMs: this.#retryBase, capMs: 30_000, idleMs: this.#timeout },
        retryable,
        retryAfterMs: (err) => parseRetryAfter((err as { retryAfter?: string })?.retryAfter),
        signal,
        log: this.#log,
        what: {
          backend: "gcs",
          op,
          ...(named ? { object: named } : {}),
          ...(options.part ? { part: options.part } : {}),
        },
      });
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      if (options.raw) throw err;
      throw this.#mapError(err, op, object || undefined);
    }
  }

  /** Turns an HTTP or network failure into a typed error that says what to fix. */
  #mapError(err: unknown, op: string, object: string | undefined): StorageError {
    if (err instanceof StorageError) return err;
    const ctx = { backend: "gcs", op, object, cause: err };
    const status = statusOf(err);
    const said = messageOf(err);
    const who = this.#auth.method;
    if (status === undefined) {
      return new UnavailableError(
        `cannot reach GCS at ${this.api} (${said}): check PLUGIN_ENDPOINT, DNS and the network`,
        ctx,
      );
    }
    if (status === 404 && isBucketMissing(err)) {
      return new NotFoundError(
        `bucket "${this.bucketName}" does not exist: create it (gcloud storage buckets create ` +
          `gs://${this.bucketName}) or fix PLUGIN_BUCKET`,
        ctx,
      );
    }
    if (status === 404) {
      return new NotFoundError(`not found in bucket "${this.bucketName}" (GCS said: ${said})`, ctx);
    }
    if (status === 401) {
      return new AuthFailedError(
        `GCS rejected the credentials (${who}): ${said}. Check that the key or token is current`,
        ctx,
      );
    }
    if (status === 403) {
      return new AccessDeniedError(
        `the identity (${who}) may not ${op} in bucket "${this.bucketName}" (GCS said: ${said}): grant it ` +
          `roles/storage.objectAdmin on the bucket (objectViewer is enough for restore only)`,
        ctx,
      );
    }
    if (status === 400 && /encrypt|customer-supplied|key/i.test(said)) {
      return new InvalidSettingsError(
        `GCS refused the customer-supplied encryption key (${said}): objects saved with a key can only be read ` +
          `with the same PLUGIN_GCS_ENCRYPTION_KEY`,
        ctx,
      );
    }
    if (status === 413) return new TooLargeError(`the object is too large for GCS: ${said}`, ctx);
    return new StorageError("Failed", `GCS answered HTTP ${status}: ${said}`, ctx);
  }
}

// ── helpers ─────────────────────────────────────────────────────────────

interface RawMeta {
  name?: string;
  size?: string | number;
  updated?: string;
  timeCreated?: string;
  generation?: string;
  metadata?: Record<string, unknown>;
}

function toInfo(md: RawMeta): ObjectInfo {
  return {
    name: md.name ?? "",
    size: Number(md.size ?? 0),
    modified: new Date(md.updated ?? md.timeCreated ?? 0),
    meta: decodeMeta(md.metadata),
  };
}

function statusOf(err: unknown): number | undefined {
  const e = err as { status?: unknown; code?: unknown; response?: { status?: unknown } };
  for (const v of [e?.status, e?.code, e?.response?.status]) {
    if (typeof v === "number" && v >= 100 && v < 600) return v;
  }
  return undefined;
}

function messageOf(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return `${err.message}${cause}`.split("\n")[0].slice(0, 500);
  }
  return String(err).slice(0, 500);
}

function isBucketMissing(err: unknown): boolean {
  return /bucket does not exist/i.test(messageOf(err));
}

function retryable(err: unknown): boolean {
  if (err instanceof SourceError || err instanceof StorageError) return false;
  const status = statusOf(err);
  if (status === undefined) return true; // network error or timeout
  return status === 408 || status === 429 || status >= 500;
}

/** Passes the first `count` bytes of a stream and ends it there (cancelling the rest of the body). */
function firstBytes(count: number): TransformStream<Uint8Array, Uint8Array> {
  let left = count;
  return new TransformStream({
    transform(chunk, controller) {
      controller.enqueue(chunk.length <= left ? chunk : chunk.subarray(0, left));
      left -= chunk.length;
      if (left <= 0) controller.terminate();
    },
  });
}

async function httpError(res: Response): Promise<HttpError> {
  const text = await res.text().catch(() => "");
  let message = text.slice(0, 300) || res.statusText;
  try {
    const body = JSON.parse(text);
    message = body?.error?.message ?? body?.error_description ?? message;
  } catch {
    // not JSON
  }
  return new HttpError(
    res.status,
    message || `HTTP ${res.status}`,
    res.headers.get("retry-after") ?? undefined,
  );
}

function persistedFrom(range: string | null): number {
  const m = /bytes=0-(\d+)/.exec(range ?? "");
  return m ? Number(m[1]) + 1 : 0;
}

function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const s = signals.filter((x): x is AbortSignal => x !== undefined);
  return s.length === 0 ? undefined : s.length === 1 ? s[0] : AbortSignal.any(s);
}

function base64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * Parses the customer-supplied encryption key setting: 32 raw bytes (as the Go plugin) or base64 of 32
 * bytes. Anything else is a settings error that names the setting (never the key).
 *
 * @example
 * ```ts
 * parseEncryptionKey(btoa("0123456789abcdef0123456789abcdef"), "PLUGIN_GCS_ENCRYPTION_KEY").length; // 32
 * ```
 */
export function parseEncryptionKey(value: string, from: string): Uint8Array {
  const raw = new TextEncoder().encode(value);
  if (raw.length === 32) return raw;
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(value.trim())) {
    try {
      const bin = atob(value.trim().replace(/-/g, "+").replace(/_/g, "/"));
      if (bin.length === 32) return Uint8Array.from(bin, (c) => c.charCodeAt(0));
    } catch {
      // not base64
    }
  }
  throw new InvalidSettingsError(
    `${from} must be an AES-256 key: 32 bytes, raw or base64 (44 characters); it is ${raw.length} bytes and ` +
      `not base64 of 32 bytes. Create one with "openssl rand -base64 32"`,
    { backend: "gcs", op: "connect" },
  );
}

/**
 * Parses the ACL setting into a JSON API predefined ACL (`projectPrivate`, `bucketOwnerFullControl`, …;
 * the gsutil spellings such as `project-private` work too). Empty means none (the bucket default).
 *
 * @example
 * ```ts
 * parseAcl("bucket-owner-full-control", "PLUGIN_GCS_ACL"); // "bucketOwnerFullControl"
 * ```
 */
export function parseAcl(value: string, from: string): string | undefined {
  if (value === "") return undefined;
  const acl = ACLS[value];
  if (!acl) {
    throw new InvalidSettingsError(
      `${from}=${JSON.stringify(value)} is not a predefined ACL: use one of ` +
        `${
          Object.keys(ACLS).filter((k) => !k.includes("-")).join(", ")
        } (or leave it empty for the bucket default)`,
      { backend: "gcs", op: "connect" },
    );
  }
  return acl;
}

/**
 * Creates the GCS backend from the settings: resolves the credentials (logging which method, never the
 * secret), checks the bucket with one list call, and returns the backend. The endpoint comes from
 * PLUGIN_ENDPOINT/GCS_ENDPOINT or, for emulators, STORAGE_EMULATOR_HOST.
 *
 * @example
 * ```ts
 * const backend = await createGcsBackend(settings, log);
 * ```
 */
export async function createGcsBackend(settings: Settings, log: Logger): Promise<Backend> {
  const ctx = { backend: "gcs", op: "connect" };
  if (settings.bucket === "") {
    throw new InvalidSettingsError(
      `no bucket: set ${describeSource(settings, "bucket")} to the GCS bucket name`,
      ctx,
    );
  }
  let endpoint = settings.endpoint.trim();
  const emulatorHost = Deno.env.get("STORAGE_EMULATOR_HOST") ?? "";
  if (endpoint === "" && emulatorHost !== "") {
    endpoint = /^https?:\/\//.test(emulatorHost) ? emulatorHost : `http://${emulatorHost}`;
  }
  if (endpoint !== "" && !/^https?:\/\/[^/]/i.test(endpoint)) {
    throw new InvalidSettingsError(
      `${describeSource(settings, "endpoint")}=${JSON.stringify(endpoint)} is not a URL: use ` +
        `https://host[:port] (or http:// for an emulator on a trusted network)`,
      ctx,
    );
  }
  const encryptionKey = settings.gcsEncryptionKey
    ? parseEncryptionKey(settings.gcsEncryptionKey, describeSource(settings, "gcsEncryptionKey"))
    : undefined;
  const predefinedAcl = parseAcl(settings.gcsAcl, describeSource(settings, "gcsAcl"));
  const timeout = settings.backendOperationTimeout;
  const auth = await resolveGcsAuth({ ...settings, endpoint }, log, { timeoutMs: timeout || 60_000 });
  if (
    /^http:\/\//i.test(endpoint) && auth.sdk.authenticated &&
    !/^http:\/\/(127\.|localhost|\[::1\])/i.test(endpoint)
  ) {
    log.warn("gcs endpoint is plain HTTP: credentials travel unencrypted", { endpoint });
  }
  log.info("storage backend", {
    backend: "gcs",
    bucket: settings.bucket,
    endpoint: endpoint || DEFAULT_API,
    auth: auth.method,
  });
  const backend = new GcsBackend({
    bucket: settings.bucket,
    endpoint,
    auth,
    partSize: settings.partSizeMb * MiB,
    concurrency: settings.transferConcurrency,
    requestTimeoutMs: timeout,
    encryptionKey,
    predefinedAcl,
    log,
  });
  await backend.probe();
  return backend;
}
