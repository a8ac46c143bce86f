/**
 * Harness cache service backend (`PLUGIN_BACKEND=harness`, A§5.6): the
 * plugin holds no storage credentials; it asks the Harness cache service
 * ({@link HarnessClient}) for pre-signed URLs and does plain HTTP on them.
 * Objects are the Go plugin's: a single object per name, or (multipart) the
 * parts `<name>.part<N>` plus a manifest under `<name>` ({@link buildManifest}).
 *
 * Better than the Go plugin, which holds every archive in memory and fetches
 * regular objects twice:
 * - `put` reads at most one part into memory. A stream that ends within it
 *   is one PUT. A longer one is, with `PLUGIN_ENABLE_MULTIPART=true`, the Go
 *   multipart protocol with (concurrency + 1) reused part buffers and the MD5
 *   computed on the way; without multipart it is spooled to a temp file
 *   beside the workspace and PUT with its length (a pre-signed PUT needs one).
 * - `get` is one ranged GET of the first range, which shows both the size
 *   and whether the object is a manifest; the rest (or the parts) arrive as
 *   parallel ranges fed in order, so memory is (concurrency + 1) ranges. A
 *   manifest's MD5 `<Checksum>` (and our `<Size>`) are verified at the end.
 * - every request (pre-sign calls included) is retried with jittered backoff
 *   and an idle timeout; a storage 403 is retried with a fresh URL, since
 *   pre-signed URLs expire. `stat` is a HEAD on the `exists` URL; a
 *   transport error is an error, never "absent".
 *
 * The service has no delete and no metadata: `delete` fails with a clear
 * error (eviction is the service's retention), `meta` is always `{}` (the
 * archive carries its own root and checksum). Part objects are hidden from
 * `list`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { dirname } from "node:path";
import {
  AccessDeniedError,
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
import type { Logger } from "../../log.ts";
import type { Settings } from "../../settings.ts";
import { DEFAULT_RETRY_POLICY, IdleTimeoutError, type RetryPolicy, withRetry } from "../transfer/retry.ts";
import {
  HarnessClient,
  HttpStatusError,
  redactUrls,
  retryable,
  retryAfter,
  safeError,
  type UrlEndpoint,
} from "./client.ts";
import {
  buildManifest,
  looksLikeManifest,
  type Manifest,
  ManifestError,
  type ManifestPart,
  MAX_MANIFEST_BYTES,
  parseManifest,
  PART_NAME,
  partKey,
} from "./manifest.ts";
import { parseRetryAfter } from "../transfer/retry.ts";
import type { PutAnswer } from "./put.ts";

/** The upload client (node:http/node:https), loaded by the first upload: a restore never needs it. */
const httpPut: typeof import("./put.ts").httpPut = async (...args) =>
  (await import("./put.ts")).httpPut(...args);

const MiB = 1024 * 1024;
/** The first range of a download: shows the size and whether the object is a manifest. */
const FIRST_RANGE = MiB;
/** Largest download range: as fast as larger ones, half the memory. */
export const DOWNLOAD_RANGE_SIZE = 8 * MiB;

/** Options of {@link HarnessBackend}; {@link createHarnessBackend} derives them from the settings. */
export interface HarnessBackendOptions {
  client: HarnessClient;
  /** Account id, to strip the legacy `<accountId>/intel/` prefix from listed paths. */
  accountId: string;
  /** In-memory part size in bytes (multipart part size; the single-PUT limit before spooling). */
  partSize: number;
  /** Download range size in bytes (default: the part size, at most {@link DOWNLOAD_RANGE_SIZE}). */
  rangeSize?: number;
  /** Parts or ranges in flight per transfer. */
  concurrency: number;
  /** `PLUGIN_ENABLE_MULTIPART=true`. */
  multipart: boolean;
  /** `PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB` in bytes: larger uploads are refused. */
  maxSize: number;
  /** Retries and idle timeout of every request. */
  policy: RetryPolicy;
  /** Where to spool an upload of unknown length without multipart (default: beside the working directory). */
  spoolDir?: string;
  log?: Logger;
}

/** The rest of an upload once the first part is full: the unconsumed end of a chunk, its chunk, the reader. */
interface Remainder {
  leftover: Uint8Array;
  owner: Uint8Array;
  reader: ReadableStreamDefaultReader<Uint8Array>;
}

/** What a ranged read returned. */
interface RangeResult {
  chunks: Uint8Array[];
  /** Total object size. */
  total: number;
}

/**
 * The Harness cache service as a {@link Backend}.
 *
 * @example
 * ```ts
 * const backend = createHarnessBackend(settings, log);
 * await backend.put("key/node_modules", archive, {});
 * ```
 */
export class HarnessBackend implements Backend {
  readonly kind = "harness";
  readonly client: HarnessClient;
  readonly partSize: number;
  readonly rangeSize: number;
  readonly concurrency: number;
  readonly #o: HarnessBackendOptions;

  constructor(options: HarnessBackendOptions) {
    this.#o = options;
    this.client = options.client;
    this.partSize = Math.max(1, options.partSize);
    this.rangeSize = Math.max(1, options.rangeSize ?? Math.min(this.partSize, DOWNLOAD_RANGE_SIZE));
    this.concurrency = Math.max(1, options.concurrency);
  }

  // ── reads ─────────────────────────────────────────────────────────────

  async get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const abort = new AbortController();
    const onAbort = () => abort.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const finish = () => options.signal?.removeEventListener("abort", onAbort);
    const urls = new Map<string, Promise<string>>();
    const range = this.rangeSize;
    try {
      // A small first range: it tells the size and the kind, and a caller that only peeks (the first tar
      // header) costs little.
      const first = await this.#readRange(name, 0, Math.min(range, FIRST_RANGE), urls, abort.signal, "get");
      const head = concat(first.chunks);
      if (first.total <= MAX_MANIFEST_BYTES && looksLikeManifest(head)) {
        const rest = head.length < first.total
          ? await this.#readRange(name, head.length, first.total - head.length, urls, abort.signal, "get")
          : { chunks: [] };
        const manifest = this.#parse(concat([head, ...rest.chunks]), name);
        this.#o.log?.debug("harness: multipart object", { object: name, parts: manifest.parts.length });
        return this.#verified(
          this.#ordered(this.#partTasks(manifest.parts, urls, abort.signal), abort, finish),
          manifest,
          name,
        );
      }
      return this.#ordered(
        this.#objectTasks(name, head.length, first.total, urls, abort.signal),
        abort,
        finish,
        head,
      );
    } catch (err) {
      abort.abort(err);
      finish();
      throw err;
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    const head = await this.#head(name, "stat");
    if (head === null) return null;
    let size = head.size;
    if (size > 0 && size <= MAX_MANIFEST_BYTES) {
      // A manifest's own size is not the object's: peek at the first bytes (never the whole object).
      const urls = new Map<string, Promise<string>>();
      const peek = await this.#readRange(name, 0, 64, urls, undefined, "stat");
      if (looksLikeManifest(concat(peek.chunks))) {
        const full = await this.#readRange(name, 0, size, urls, undefined, "stat");
        const manifest = this.#parse(concat(full.chunks), name);
        size = manifest.size ?? await this.#partsSize(manifest.parts);
      }
    }
    return { name, size, modified: head.modified, meta: {} };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const rows = await this.client.listEntries(prefix);
    const legacy = this.client.mode === "intel" ? `${this.#o.accountId}/intel/` : "";
    const entries = new Map<string, ObjectInfo>();
    const partSizes = new Map<string, number>();
    for (const row of rows) {
      const name = legacy !== "" && row.path.startsWith(legacy) ? row.path.slice(legacy.length) : row.path;
      if (!name.startsWith(prefix)) continue;
      const part = name.match(PART_NAME);
      if (part) {
        partSizes.set(part[1], (partSizes.get(part[1]) ?? 0) + row.size);
        continue;
      }
      entries.set(name, {
        name,
        size: row.size,
        modified: Number.isNaN(row.modified.getTime()) ? new Date(0) : row.modified,
        meta: {},
      });
    }
    for (const info of entries.values()) {
      const parts = partSizes.get(info.name);
      // A small object with parts beside it is a manifest: report the parts' total.
      if (parts !== undefined && info.size <= MAX_MANIFEST_BYTES) info.size = parts;
      yield info;
    }
  }

  delete(name: string): Promise<void> {
    return Promise.reject(
      new StorageError(
        "Failed",
        "the Harness cache service offers no delete: caches expire by the service's retention policy " +
          "(flush and TTL eviction need another backend)",
        { backend: this.kind, op: "delete", object: name },
      ),
    );
  }

  // ── writes ────────────────────────────────────────────────────────────

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    _meta: ObjectMeta,
    options: TransferOptions = {},
  ) {
    options.signal?.throwIfAborted();
    const internal = new AbortController();
    const onAbort = () => internal.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const reader = body.getReader();
    internal.signal.addEventListener("abort", () => reader.cancel(internal.signal.reason).catch(() => {}), {
      once: true,
    });
    try {
      // The first part decides: a stream that ends within it is a single PUT from memory.
      const first = new Uint8Array(this.partSize);
      let fill = 0;
      let leftover: Uint8Array | undefined;
      let owner: Uint8Array | undefined;
      for (;;) {
        const { done, value } = await reader.read();
        internal.signal.throwIfAborted();
        if (done) {
          if (fill > this.#o.maxSize) throw this.#tooLarge(name);
          await this.#putBytes(name, first.subarray(0, fill), {}, internal.signal);
          return;
        }
        const n = Math.min(this.partSize - fill, value.length);
        first.set(value.subarray(0, n), fill);
        fill += n;
        if (n < value.length) {
          leftover = value.subarray(n);
          owner = value;
          break;
        }
        options.release?.(value);
      }
      const rest = { leftover: leftover!, owner: owner!, reader };
      if (this.#o.multipart) await this.#putMultipart(name, first, rest, internal, options);
      else await this.#putSpooled(name, first, rest, internal.signal, options);
    } catch (raw) {
      const err = internal.signal.aborted && !options.signal?.aborted ? internal.signal.reason ?? raw : raw;
      internal.abort(err);
      if (options.signal?.aborted) {
        throw new StorageError("Failed", "upload aborted; nothing was committed under the name", {
          backend: this.kind,
          op: "put",
          object: name,
          cause: options.signal.reason ?? err,
        });
      }
      throw this.#error(err, "put", name);
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The Go multipart protocol: initiate, parts in parallel from reused buffers, then the manifest. */
  async #putMultipart(
    name: string,
    first: Uint8Array,
    rest: Remainder,
    internal: AbortController,
    options: TransferOptions,
  ): Promise<void> {
    const { reader } = rest;
    const md5 = createHash("md5");
    const uploadId = await this.#initiate(name, internal.signal);
    const pool: Uint8Array[] = [];
    const inflight = new Set<Promise<void>>();
    const parts: ManifestPart[] = [];
    let number = 0;
    let total = 0;
    const dispatch = async (data: Uint8Array, owner: Uint8Array) => {
      // Part promises never reject (a failure aborts `internal`), so waiting on them is safe.
      while (inflight.size >= this.concurrency) await Promise.race(inflight);
      internal.signal.throwIfAborted();
      md5.update(data);
      total += data.length;
      const n = ++number;
      const key = partKey(name, n);
      const sent: Promise<void> = this.#putBytes(
        key,
        data,
        { key, partNumber: String(n), uploadId },
        internal.signal,
        true,
      ).then((etag) => {
        parts.push({ number: n, etag, key });
        pool.push(owner);
      }).catch((err) => internal.abort(err)).finally(() => inflight.delete(sent));
      inflight.add(sent);
    };
    let buffer = first;
    let fill = this.partSize;
    let pending: Remainder | undefined = rest;
    for (;;) {
      let value: Uint8Array;
      let owner: Uint8Array;
      if (pending !== undefined) {
        value = pending.leftover;
        owner = pending.owner;
        pending = undefined;
      } else {
        const r = await reader.read();
        internal.signal.throwIfAborted();
        if (r.done) break;
        value = owner = r.value;
      }
      let offset = 0;
      while (offset < value.length) {
        if (fill === this.partSize) {
          if (total + fill > this.#o.maxSize) throw this.#tooLarge(name);
          await dispatch(buffer, buffer);
          buffer = pool.pop() ?? new Uint8Array(this.partSize);
          fill = 0;
        }
        const n = Math.min(this.partSize - fill, value.length - offset);
        buffer.set(value.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
      }
      options.release?.(owner);
    }
    if (total + fill > this.#o.maxSize) throw this.#tooLarge(name);
    if (fill > 0) await dispatch(buffer.subarray(0, fill), buffer);
    while (inflight.size > 0) await Promise.race(inflight);
    internal.signal.throwIfAborted();
    const manifest = buildManifest({ parts, checksum: md5.digest("hex"), size: total });
    await this.#putBytes(name, new TextEncoder().encode(manifest), { uploadId }, internal.signal);
    this.#o.log?.debug("harness: multipart upload complete", {
      object: name,
      parts: parts.length,
      bytes: total,
    });
  }

  /** Initiates a multipart upload: PUT with an empty body; the id from `X-Upload-Id`, the XML body, or Go's fallback. */
  async #initiate(name: string, signal: AbortSignal): Promise<string> {
    return await this.#storageCall(
      "upload",
      name,
      { key: name, uploads: "" },
      signal,
      "put",
      async (url, s, touch) => {
        const res = await httpPut(url, new Uint8Array(0), 0, s, touch);
        if (res.status !== 200) throw putStatus(res);
        const header = res.headers["x-upload-id"];
        if (header) return header;
        const xml = res.text.match(/<UploadId>([^<]+)<\/UploadId>/);
        if (xml) return xml[1].trim();
        return `${BigInt(Date.now()) * 1_000_000n}-${name}`;
      },
    );
  }

  /**
   * One PUT of known bytes to a fresh upload URL (retried, each attempt with a new URL).
   * Resolves to the ETag (quotes stripped); `needEtag` makes a missing ETag an error (parts).
   */
  #putBytes(
    name: string,
    data: Uint8Array,
    extra: Record<string, string>,
    signal: AbortSignal,
    needEtag = false,
  ): Promise<string> {
    return this.#storageCall("upload", name, extra, signal, "put", async (url, s, touch) => {
      const res = await httpPut(url, data, data.length, s, touch);
      if (res.status !== 200) throw putStatus(res);
      const etag = (res.headers.etag ?? "").replace(/^"|"$/g, "");
      if (needEtag && etag === "") throw new Error(`the storage answered the PUT of ${name} without an ETag`);
      return etag;
    });
  }

  /** No multipart: spool the rest beside the workspace, then one PUT with the length. */
  async #putSpooled(
    name: string,
    first: Uint8Array,
    rest: Remainder,
    signal: AbortSignal,
    options: TransferOptions,
  ): Promise<void> {
    const dir = this.#o.spoolDir ?? spoolDirectory();
    const path = await Deno.makeTempFile({ dir, prefix: ".ci-cache-spool-" });
    try {
      let size = 0;
      const file = await Deno.open(path, { write: true });
      try {
        const write = async (chunk: Uint8Array) => {
          size += chunk.length;
          if (size > this.#o.maxSize) throw this.#tooLarge(name);
          let off = 0;
          while (off < chunk.length) off += await file.write(chunk.subarray(off));
        };
        await write(first);
        await write(rest.leftover);
        options.release?.(rest.owner);
        for (;;) {
          const { done, value } = await rest.reader.read();
          signal.throwIfAborted();
          if (done) break;
          await write(value);
          options.release?.(value);
        }
      } finally {
        file.close();
      }
      this.#o.log?.debug("harness: spooled upload (multipart disabled)", { object: name, bytes: size });
      await this.#storageCall("upload", name, {}, signal, "put", async (url, s, touch) => {
        const res = await httpPut(url, { path }, size, s, touch);
        if (res.status !== 200) throw putStatus(res);
      });
    } finally {
      await Deno.remove(path).catch(() => {});
    }
  }

  // ── requests ──────────────────────────────────────────────────────────

  /**
   * One storage request behind a pre-signed URL, retried: every attempt asks
   * the service for a fresh URL, so an expired one is replaced.
   */
  async #storageCall<T>(
    endpoint: UrlEndpoint,
    name: string,
    extra: Record<string, string>,
    signal: AbortSignal | undefined,
    op: string,
    fn: (url: string, signal: AbortSignal, touch: () => void) => Promise<T>,
    urls?: Map<string, Promise<string>>,
  ): Promise<T> {
    let host: string | undefined; // where the last attempt went, named when the storage is unreachable
    try {
      return await withRetry(async ({ signal: s, touch, number }) => {
        let url: Promise<string> | undefined = number === 0 ? urls?.get(name) : undefined;
        if (url === undefined) {
          url = this.client.presign(endpoint, name, extra, s);
          url.catch(() => {});
          urls?.set(name, url);
        }
        const resolved = await url;
        host = URL.canParse(resolved) ? new URL(resolved).host : undefined;
        touch();
        try {
          return await fn(resolved, s, touch);
        } catch (err) {
          if (s.aborted) throw s.reason;
          throw safeError(err);
        }
      }, {
        policy: this.#o.policy,
        retryable,
        retryAfterMs: retryAfter,
        signal,
        log: this.#o.log,
        what: { backend: this.kind, op, object: name },
      });
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      throw this.#error(err, op, name, host);
    }
  }

  /**
   * Reads `[start, start + len)` of an object (or less at its end) with one ranged GET, retried.
   * A missing object is a {@link NotFoundError}; an empty one answers 416, which reads as empty.
   */
  #readRange(
    name: string,
    start: number,
    len: number,
    urls: Map<string, Promise<string>>,
    signal: AbortSignal | undefined,
    op: string,
  ): Promise<RangeResult> {
    return this.#storageCall("download", name, {}, signal, op, async (url, s, touch) => {
      const res = await fetch(url, { headers: { range: `bytes=${start}-${start + len - 1}` }, signal: s });
      touch();
      if (res.status === 404) {
        await res.body?.cancel();
        throw new NotFoundError("no such object", { backend: this.kind, op, object: name });
      }
      if (res.status === 416 && start === 0) {
        await res.body?.cancel();
        return { chunks: [], total: 0 };
      }
      let total: number;
      if (res.status === 206) {
        const m = (res.headers.get("content-range") ?? "").match(/^bytes (\d+)-(\d+)\/(\d+)$/);
        if (!m || Number(m[1]) !== start) {
          await res.body?.cancel();
          throw new Error(`the storage answered a range request with Content-Range "${m?.[0] ?? ""}"`);
        }
        total = Number(m[3]);
      } else if (res.status === 200 && start === 0) {
        total = Number(res.headers.get("content-length") ?? NaN);
        if (!(total <= len)) {
          await res.body?.cancel();
          throw new StorageError("Failed", "the storage ignores Range requests on pre-signed URLs", {
            backend: this.kind,
            op,
            object: name,
          });
        }
      } else {
        throw storageStatus(res, await res.text().catch(() => ""));
      }
      const want = Math.min(len, total - start);
      const chunks: Uint8Array[] = [];
      let got = 0;
      for await (const chunk of res.body ?? []) {
        touch();
        got += chunk.length;
        if (got > want) throw new Error("the storage sent more bytes than the range asked for");
        chunks.push(chunk);
      }
      if (got !== want) throw new Error(`short range read: ${got} of ${want} bytes`);
      return { chunks, total };
    }, urls);
  }

  /** HEAD on the `exists` URL: `null` for 404 (or 200 without an ETag, as Go). */
  #head(name: string, op: string): Promise<{ size: number; modified: Date } | null> {
    return this.#storageCall("exists", name, {}, undefined, op, async (url, s) => {
      const res = await fetch(url, { method: "HEAD", signal: s });
      await res.body?.cancel();
      if (res.status === 404) return null;
      if (res.status !== 200) throw storageStatus(res, "");
      if (!res.headers.get("etag")) return null;
      const modified = new Date(res.headers.get("last-modified") ?? "");
      return {
        size: Number(res.headers.get("content-length") ?? 0),
        modified: Number.isNaN(modified.getTime()) ? new Date(0) : modified,
      };
    });
  }

  /** Total size of a Go manifest's parts (it records none), by HEAD. */
  async #partsSize(parts: ManifestPart[]): Promise<number> {
    let total = 0;
    for (let i = 0; i < parts.length; i += this.concurrency) {
      const heads = await Promise.all(
        parts.slice(i, i + this.concurrency).map((p) => this.#head(p.key, "stat")),
      );
      for (const [j, h] of heads.entries()) {
        if (h === null) throw this.#corrupt(parts[i + j].key, `part ${parts[i + j].number} is missing`);
        total += h.size;
      }
    }
    return total;
  }

  // ── streams ───────────────────────────────────────────────────────────

  /** A single object from `start` on, as parallel ranges. */
  async *#objectTasks(
    name: string,
    start: number,
    total: number,
    urls: Map<string, Promise<string>>,
    signal: AbortSignal,
  ): AsyncGenerator<() => Promise<Uint8Array[]>> {
    for (let off = start; off < total; off += this.rangeSize) {
      const len = Math.min(this.rangeSize, total - off);
      yield () => this.#readRange(name, off, len, urls, signal, "get").then((r) => r.chunks);
    }
  }

  /** Ranges of every part in order: the first range of a part tells its size, then the rest follow. */
  async *#partTasks(
    parts: ManifestPart[],
    urls: Map<string, Promise<string>>,
    signal: AbortSignal,
  ): AsyncGenerator<() => Promise<Uint8Array[]>> {
    // Both writers cut equal parts but the last, and record no part sizes: the first part's size plans the
    // ranges of all but the last (each answer's total is checked), so they stream in parallel; only the first
    // and the last part are probed.
    let size = 0;
    for (const [i, part] of parts.entries()) {
      const read = (off: number, len: number) =>
        this.#readRange(part.key, off, len, urls, signal, "get").catch((err) => {
          throw err instanceof NotFoundError
            ? this.#corrupt(part.key, `part ${part.number} is missing`)
            : err;
        });
      if (i === 0 || i === parts.length - 1) {
        let probe!: Promise<RangeResult>;
        yield () => {
          probe = read(0, this.rangeSize);
          return probe.then((r) => r.chunks);
        };
        const { total } = await probe;
        if (i === 0) size = total;
        else if (total > size) throw this.#corrupt(part.key, `the last part is larger than the first`);
        for (let off = this.rangeSize; off < total; off += this.rangeSize) {
          const len = Math.min(this.rangeSize, total - off);
          yield () => read(off, len).then((r) => r.chunks);
        }
        continue;
      }
      for (let off = 0; off < size; off += this.rangeSize) {
        const len = Math.min(this.rangeSize, size - off);
        yield () =>
          read(off, len).then((r) => {
            if (r.total !== size) {
              throw this.#corrupt(
                part.key,
                `part ${part.number} holds ${r.total} bytes, the first part ${size}`,
              );
            }
            return r.chunks;
          });
      }
    }
  }

  /**
   * Runs tasks with `concurrency` in flight and emits their chunks in order, after `first` (already read).
   * Nothing more is fetched until the reader wants more than `first`.
   */
  #ordered(
    tasks: AsyncGenerator<() => Promise<Uint8Array[]>>,
    abort: AbortController,
    finish: () => void,
    first?: Uint8Array,
  ): ReadableStream<Uint8Array> {
    const inflight: Promise<Uint8Array[]>[] = [];
    let exhausted = false;
    const fill = async () => {
      while (!exhausted && inflight.length < this.concurrency) {
        const next = await tasks.next();
        if (next.done) {
          exhausted = true;
          break;
        }
        const p = next.value();
        p.catch(() => {}); // awaited in order; avoid an unhandled rejection meanwhile
        inflight.push(p);
      }
    };
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        if (first !== undefined && first.length > 0) controller.enqueue(first);
      },
      pull: async (controller) => {
        try {
          await fill();
          const head = inflight.shift();
          if (head === undefined) {
            finish();
            controller.close();
            return;
          }
          for (const chunk of await head) controller.enqueue(chunk);
        } catch (err) {
          abort.abort(err);
          finish();
          await tasks.return(undefined).catch(() => {});
          throw err;
        }
      },
      cancel: async (reason) => {
        abort.abort(reason);
        finish();
        await tasks.return(undefined).catch(() => {});
      },
    }, { highWaterMark: 0 });
  }

  /** Checks a multipart object's MD5 `<Checksum>` and `<Size>` as it streams through. */
  #verified(
    stream: ReadableStream<Uint8Array>,
    manifest: Manifest,
    name: string,
  ): ReadableStream<Uint8Array> {
    const md5 = createHash("md5");
    let size = 0;
    return stream.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          md5.update(chunk);
          size += chunk.length;
          controller.enqueue(chunk);
        },
        flush: () => {
          if (manifest.size !== undefined && size !== manifest.size) {
            throw this.#corrupt(name, `the parts hold ${size} bytes, the manifest says ${manifest.size}`);
          }
          const digest = md5.digest("hex");
          if (manifest.checksum !== undefined && digest !== manifest.checksum) {
            throw this.#corrupt(
              name,
              `MD5 ${digest} does not match the manifest's checksum ${manifest.checksum}`,
            );
          }
        },
      }),
    );
  }

  // ── errors ────────────────────────────────────────────────────────────

  #parse(bytes: Uint8Array, name: string): Manifest {
    try {
      return parseManifest(new TextDecoder().decode(bytes), name);
    } catch (err) {
      if (err instanceof ManifestError) throw this.#corrupt(name, err.message);
      throw err;
    }
  }

  #corrupt(name: string, message: string): StorageError {
    return new StorageError("Failed", `corrupt multipart object: ${message}`, {
      backend: this.kind,
      op: "get",
      object: name,
    });
  }

  #tooLarge(name: string): StorageError {
    return new TooLargeError(
      `the archive exceeds the maximum upload size of ${Math.floor(this.#o.maxSize / MiB)} MB: raise ` +
        `PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB or cache less`,
      { backend: this.kind, op: "put", object: name },
    );
  }

  /** A storage-side failure as a typed error that says what to check. */
  #error(err: unknown, op: string, name: string, storageHost?: string): StorageError {
    if (err instanceof StorageError) return err;
    const ctx = { backend: this.kind, op, object: name, cause: err };
    const attempts = this.#o.policy.retries + 1;
    if (err instanceof HttpStatusError) {
      if (err.status === 403) {
        return new AccessDeniedError(
          `the storage refused the pre-signed URL (HTTP 403) ${attempts} times, each with a fresh URL: ` +
            `the cache service signs URLs the storage does not accept (expired or wrong signature); ` +
            `check the service and the clocks`,
          ctx,
        );
      }
      if (err.status === 404) return new NotFoundError("no such object", ctx);
      if (err.status === 408 || err.status === 429 || err.status >= 500) {
        return new UnavailableError(
          `the storage behind the pre-signed URL kept failing (HTTP ${err.status}) after ${attempts} attempts: ` +
            `retry later`,
          ctx,
        );
      }
      return new StorageError("Failed", redactUrls(err.message), ctx);
    }
    const at = storageHost ? ` at ${storageHost}` : "";
    if (err instanceof IdleTimeoutError) {
      return new UnavailableError(
        `the storage${at}: ${err.message} after ${attempts} attempts: raise PLUGIN_BACKEND_OPERATION_TIMEOUT ` +
          `or check the network`,
        ctx,
      );
    }
    const message = redactUrls(err instanceof Error ? err.message : String(err));
    return new UnavailableError(`storage request${at} failed after ${attempts} attempts: ${message}`, ctx);
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** A storage answer that is not a success, with the S3-style error code and message when the body has them. */
function statusError(status: number, text: string, retryAfterMs: number | undefined): HttpStatusError {
  const code = text.match(/<Code>([^<]{1,64})<\/Code>/)?.[1];
  const said = text.match(/<Message>([^<]{1,200})<\/Message>/)?.[1];
  const detail = [code, said && redactUrls(said)].filter(Boolean).join(": ");
  return new HttpStatusError(status, "storage", retryAfterMs, detail ? ` (${detail})` : "");
}

function storageStatus(res: Response, text: string): HttpStatusError {
  return statusError(res.status, text, parseRetryAfter(res.headers.get("retry-after")));
}

function putStatus(res: PutAnswer): HttpStatusError {
  return statusError(res.status, res.text, res.retryAfterMs);
}

/** A temp dir on the workspace's disk (not a tmpfs /tmp): the working directory's parent, else itself. */
function spoolDirectory(): string {
  const cwd = Deno.cwd();
  for (const dir of [dirname(cwd), cwd]) {
    try {
      const probe = Deno.makeTempFileSync({ dir, prefix: ".ci-cache-probe-" });
      Deno.removeSync(probe);
      return dir;
    } catch { /* not writable */ }
  }
  return Deno.env.get("TMPDIR") ?? "/tmp";
}

/**
 * Builds the backend from the settings: `PLUGIN_CACHE_SERVICE_BASE_URL`,
 * `PLUGIN_CACHE_SERVICE_BEARER_TOKEN` (a secret), `PLUGIN_ACCOUNT_ID`,
 * `PLUGIN_CACHE_TYPE`, the multipart settings and `HARNESS_CI_USE_GCS_CACHE_SERVICE`.
 * The part size is `PLUGIN_MULTIPART_CHUNK_SIZE_MB` capped by `PLUGIN_PART_SIZE_MB`
 * (memory: concurrency + 1 parts).
 *
 * @example
 * ```ts
 * const backend = createHarnessBackend(settings, log, Deno.env.toObject());
 * ```
 */
export function createHarnessBackend(
  settings: Settings,
  log: Logger,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): HarnessBackend {
  const base = settings.cacheServiceBaseUrl.trim();
  const where = { backend: "harness", op: "connect" };
  if (base === "") {
    throw new InvalidSettingsError(
      "PLUGIN_CACHE_SERVICE_BASE_URL is not set: set it to the Harness cache service URL",
      where,
    );
  }
  try {
    const u = new URL(base);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(u.protocol);
  } catch {
    throw new InvalidSettingsError(
      `PLUGIN_CACHE_SERVICE_BASE_URL=${JSON.stringify(redactUrls(base))} is not an http(s) URL`,
      where,
    );
  }
  for (
    const key of ["multipartChunkSizeMb", "multipartMaxUploadSizeMb", "multipartThresholdSizeMb"] as const
  ) {
    if (settings[key] < 1) {
      const env = {
        multipartChunkSizeMb: "PLUGIN_MULTIPART_CHUNK_SIZE_MB",
        multipartMaxUploadSizeMb: "PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB",
        multipartThresholdSizeMb: "PLUGIN_MULTIPART_THRESHOLD_SIZE_MB",
      }[key];
      throw new InvalidSettingsError(`${env}=${settings[key]} must be at least 1`, where);
    }
  }
  if (settings.cacheServiceToken !== "") log.addSecret(settings.cacheServiceToken);
  if (settings.accountId === "") {
    log.warn("harness: PLUGIN_ACCOUNT_ID is empty; the cache service will probably refuse the requests");
  }
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, idleMs: settings.backendOperationTimeout };
  const client = new HarnessClient({
    baseUrl: base,
    token: settings.cacheServiceToken,
    accountId: settings.accountId,
    cacheType: settings.cacheType,
    useGcs: (env.HARNESS_CI_USE_GCS_CACHE_SERVICE ?? "").toLowerCase() === "true",
    policy,
    log,
  });
  const multipart = settings.multipartEnabled === "true";
  const partSize = Math.min(settings.multipartChunkSizeMb, settings.partSizeMb) * MiB;
  log.info("harness: using the cache service", {
    endpoints: client.mode,
    multipart,
    part_size: `${partSize / MiB} MiB`,
  });
  return new HarnessBackend({
    client,
    accountId: settings.accountId,
    partSize,
    concurrency: settings.transferConcurrency,
    multipart,
    maxSize: settings.multipartMaxUploadSizeMb * MiB,
    policy,
    log,
  });
}
