/**
 * The s3 backend without the AWS SDK, for static keys: every request is a
 * plain `fetch` signed with our SigV4 (`sigv4.ts`) through {@link S3Meta}'s
 * retry, so a save or a restore of a small cache never loads
 * `@aws-sdk/client-s3` (about 0.3 s of CPU before the first byte moves).
 * Same behaviour as the SDK backend (`backend.ts`):
 *
 * - `put`: one PutObject for a stream of one part or less; otherwise
 *   CreateMultipartUpload, UploadPart (`concurrency` in flight, part buffers
 *   reused) and CompleteMultipartUpload; a failing stream, a failed part or
 *   an abort aborts the upload, so no object and no parts stay. Parts are
 *   signed with their SHA-256; metadata goes in `x-amz-meta-*`, with the
 *   ACL and server-side encryption headers.
 * - `get`: ranges of at most 8 MiB through the shared ordered-ranges
 *   scheduler, pinned to the ETag with `If-Match` (the one the `stat` just
 *   before saw, else a HEAD), restarted when the object is replaced before
 *   the first byte went out.
 * - `delete`, {@link FetchS3Backend.deleteMany} (DeleteObjects with
 *   Content-MD5), {@link FetchS3Backend.sweepStale} (ListMultipartUploads +
 *   AbortMultipartUpload).
 *
 * One difference: a part upload shows no progress while its body is sent
 * (`fetch` reports none), so the idle timeout covers the whole part request.
 *
 * @module
 */
import {
  type Backend,
  NotFoundError,
  type ObjectInfo,
  type ObjectMeta,
  StorageError,
  type TransferOptions,
} from "../backend.ts";
import type { Logger } from "../../log.ts";
import { encodeMeta } from "../metadata.ts";
import { orderedRanges, type RangeSink, streamRange } from "../transfer/ranges.ts";
import { restartingGet } from "../transfer/restart.ts";
import { xmlText } from "../transfer/xml.ts";
import { md5 } from "../../key/md5.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";
import { httpStatus, isCode, shortMessage } from "./errors.ts";
import { S3HttpError, type S3Meta } from "./meta.ts";
import { DELETE_BATCH, DOWNLOAD_RANGE_SIZE, MAX_PARTS, partSizeFor } from "./parts.ts";

const MiB = 1024 * 1024;

/** Options of {@link FetchS3Backend}. */
export interface FetchS3Options {
  /** Signs and sends the requests (endpoint, bucket, keys, retry policy). */
  meta: S3Meta;
  bucket: string;
  /** Upload part size in bytes (default 16 MiB; grown by {@link partSizeFor}). */
  partSize?: number;
  /** Largest object to support (default 50 GiB). */
  maxObjectSize?: number;
  /** Download range size in bytes (default: the part size, at most {@link DOWNLOAD_RANGE_SIZE}). */
  rangeSize?: number;
  /** Parts or ranges in flight per transfer (default 4). */
  concurrency?: number;
  acl?: string;
  sse?: string;
  sseKmsKeyId?: string;
  log?: Logger;
}

/** Text for an XML element (keys and ETags in request bodies). */
function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Hex SHA-256 of `data` (WebCrypto). */
async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Base64 of the MD5 of `text` (Content-MD5, which DeleteObjects requires). */
function contentMd5(text: string): string {
  const hex = md5(text);
  let bin = "";
  for (let i = 0; i < hex.length; i += 2) bin += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return btoa(bin);
}

/** A 200 answer whose body is an `<Error>` (CompleteMultipartUpload may do that): thrown as a 500. */
function errorInBody(xml: string, headers: Headers): void {
  if (!/<Error>/.test(xml)) return;
  throw new S3HttpError(500, xmlText(xml, "Code") ?? "InternalError", xmlText(xml, "Message") ?? "", headers);
}

/**
 * One bucket as a {@link Backend}, over `fetch` only.
 *
 * @example
 * ```ts
 * const backend = new FetchS3Backend({ meta, bucket: "cache", partSize: 5 * 2 ** 20 });
 * await backend.put("key/node_modules", stream, { cicache_format: "zstd" });
 * const restored = await backend.get("key/node_modules");
 * ```
 */
export class FetchS3Backend implements Backend {
  readonly kind = "s3";
  readonly meta: S3Meta;
  readonly partSize: number;
  readonly rangeSize: number;
  readonly concurrency: number;
  readonly #o: FetchS3Options;
  /** What the last `stat` of a name saw: the download that follows pins to it instead of asking again. */
  readonly #seen = new Map<string, { size: number; etag?: string }>();

  constructor(options: FetchS3Options) {
    this.#o = options;
    this.meta = options.meta;
    this.partSize = partSizeFor(options.partSize ?? 16 * MiB, options.maxObjectSize ?? 51200 * MiB);
    this.rangeSize = Math.max(1, options.rangeSize ?? Math.min(this.partSize, DOWNLOAD_RANGE_SIZE));
    this.concurrency = Math.max(1, options.concurrency ?? 4);
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    const head = await this.meta.head(name, "stat");
    if (head === null) {
      this.#seen.delete(name);
      return null;
    }
    this.#seen.set(name, { size: head.info.size, etag: head.etag });
    return head.info;
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.meta.list(prefix);
  }

  get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return restartingGet(() => this.#getOnce(name, options), {
      log: this.#o.log,
      backend: this.kind,
      object: name,
    });
  }

  /** One download pinned to the ETag seen by the `stat` before it (once), else by a HEAD. */
  async #getOnce(name: string, options: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    let pinned = this.#seen.get(name);
    this.#seen.delete(name); // a restart (object replaced) asks again
    if (pinned === undefined) {
      const head = await this.meta.head(name, "get");
      if (head === null) {
        throw new NotFoundError(`no object "${name}" in bucket "${this.#o.bucket}"`, {
          backend: this.kind,
          op: "get",
          object: name,
        });
      }
      pinned = { size: head.info.size, etag: head.etag };
    }
    const { size, etag } = pinned;
    const abort = new AbortController();
    const onAbort = () => abort.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    return orderedRanges({
      size,
      rangeSize: this.rangeSize,
      concurrency: this.concurrency,
      abort,
      read: (start, count, sink, signal) =>
        this.#readRange(name, start, start + count - 1, etag, sink, signal),
      finish: () => options.signal?.removeEventListener("abort", onAbort),
    });
  }

  /** Bytes [start, end] pinned to `etag` into `sink` as they arrive (each attempt starts the range over). */
  async #readRange(
    name: string,
    start: number,
    end: number,
    etag: string | undefined,
    sink: RangeSink,
    signal: AbortSignal,
  ): Promise<void> {
    try {
      await this.meta.request({
        op: "get",
        object: name,
        part: `range ${start}-${end}`,
        method: "GET",
        url: this.meta.url(name),
        headers: { range: `bytes=${start}-${end}`, ...(etag ? { "if-match": etag } : {}) },
        signal,
        read: async (res, attempt) => {
          sink.begin();
          await streamRange(res.body!, end - start + 1, sink, attempt.signal, attempt.touch);
        },
      });
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
      if (httpStatus(err) === 404 && !isCode(err, "NoSuchBucket")) {
        throw new NotFoundError(`no object "${name}" in bucket "${this.#o.bucket}"`, {
          backend: this.kind,
          op: "get",
          object: name,
          cause: err,
        });
      }
      throw this.meta.error(err, "get", name);
    }
  }

  /** The headers of a new object: type, metadata, ACL, encryption. */
  #objectHeaders(meta: ObjectMeta): Record<string, string> {
    const o = this.#o;
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    for (const [k, v] of Object.entries(encodeMeta(meta))) headers[`x-amz-meta-${k.toLowerCase()}`] = v;
    if (o.acl) headers["x-amz-acl"] = o.acl;
    if (o.sse) headers["x-amz-server-side-encryption"] = o.sse;
    if (o.sse && o.sse !== "AES256" && o.sseKmsKeyId) {
      headers["x-amz-server-side-encryption-aws-kms-key-id"] = o.sseKmsKeyId;
    }
    return headers;
  }

  async put(name: string, body: ReadableStream<Uint8Array>, meta: ObjectMeta, options: TransferOptions = {}) {
    options.signal?.throwIfAborted();
    const headers = this.#objectHeaders(meta);
    // Leftovers of a killed save of this key (best effort: the identity may not list uploads).
    await this.sweepStale(name).catch((err) =>
      this.#o.log?.debug("s3: could not look for stale multipart uploads", {
        object: name,
        error: shortMessage(err),
      })
    );
    // `internal` aborts on the caller's signal or the first failed part; it cancels the source.
    const internal = new AbortController();
    const onAbort = () => internal.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    const reader = body.getReader();
    internal.signal.addEventListener("abort", () => reader.cancel(internal.signal.reason).catch(() => {}), {
      once: true,
    });
    // Part buffers are reused once their part is stored: (concurrency + 1) × part size, allocated once.
    const pool: Uint8Array<ArrayBuffer>[] = [];
    const inflight = new Set<Promise<void>>();
    const parts: { number: number; etag: string }[] = [];
    let uploadId: string | undefined;
    let partCount = 0;
    let buffer = new Uint8Array(this.partSize);
    let fill = 0;

    const dispatch = async (data: Uint8Array<ArrayBuffer>, owner: Uint8Array<ArrayBuffer>) => {
      // Part promises never reject (a failure aborts `internal`), so waiting on them is safe.
      while (inflight.size >= this.concurrency) await Promise.race(inflight);
      internal.signal.throwIfAborted();
      if (partCount >= MAX_PARTS) throw this.#tooManyParts(name);
      if (uploadId === undefined) {
        const { body } = await this.meta.request({
          op: "put",
          object: name,
          method: "POST",
          url: this.meta.url(name, { uploads: "" }),
          headers,
          signal: internal.signal,
          read: async (res) => {
            const xml = await res.text();
            errorInBody(xml, res.headers);
            return xml;
          },
        });
        uploadId = xmlText(body as string, "UploadId");
        if (!uploadId) throw new Error("CreateMultipartUpload returned no UploadId");
      }
      const number = ++partCount;
      const id = uploadId;
      const sent: Promise<void> = sha256Hex(data).then((hash) =>
        this.meta.request({
          op: "put",
          object: name,
          part: `part ${number}`,
          method: "PUT",
          url: this.meta.url(name, { partNumber: String(number), uploadId: id }),
          body: data,
          payloadHash: hash,
          signal: internal.signal,
        })
      ).then(({ res }) => {
        const etag = res.headers.get("etag");
        if (!etag) throw new Error(`part ${number} came back without an ETag`);
        parts.push({ number, etag });
        pool.push(owner);
      }).catch((err) => internal.abort(err)).finally(() => inflight.delete(sent));
      inflight.add(sent);
    };

    try {
      for (;;) {
        const { done, value } = await reader.read();
        internal.signal.throwIfAborted();
        if (done) break;
        let offset = 0;
        while (offset < value.length) {
          if (fill === this.partSize) {
            // Only sent once more bytes follow: a stream of one part or less is a single PutObject.
            await dispatch(buffer, buffer);
            buffer = pool.pop() ?? new Uint8Array(this.partSize);
            fill = 0;
          }
          const n = Math.min(this.partSize - fill, value.length - offset);
          buffer.set(value.subarray(offset, offset + n), fill);
          fill += n;
          offset += n;
        }
        options.release?.(value); // copied into part buffers: the producer may reuse it
      }
      if (uploadId === undefined && inflight.size === 0) {
        const data = buffer.subarray(0, fill);
        await this.meta.request({
          op: "put",
          object: name,
          method: "PUT",
          url: this.meta.url(name),
          headers,
          body: data,
          payloadHash: await sha256Hex(data),
          signal: internal.signal,
        });
        return;
      }
      if (fill > 0) await dispatch(buffer.subarray(0, fill), buffer);
      while (inflight.size > 0) await Promise.race(inflight);
      internal.signal.throwIfAborted();
      parts.sort((x, y) => x.number - y.number);
      const xml = new TextEncoder().encode(
        "<CompleteMultipartUpload>" +
          parts.map((p) =>
            `<Part><PartNumber>${p.number}</PartNumber><ETag>${escapeXml(p.etag)}</ETag></Part>`
          )
            .join("") +
          "</CompleteMultipartUpload>",
      );
      await this.meta.request({
        op: "put",
        object: name,
        part: "complete",
        method: "POST",
        url: this.meta.url(name, { uploadId: uploadId! }),
        headers: { "content-type": "application/xml" },
        body: xml,
        payloadHash: await sha256Hex(xml),
        signal: internal.signal,
        read: async (res) => errorInBody(await res.text(), res.headers),
      });
    } catch (raw) {
      const err = internal.signal.aborted && !options.signal?.aborted ? internal.signal.reason ?? raw : raw;
      internal.abort(err);
      await Promise.allSettled([...inflight]);
      // Abort the multipart upload before rejecting, so no orphaned parts remain when put() returns.
      if (uploadId !== undefined) await this.#abortUpload(name, uploadId);
      if (options.signal?.aborted) {
        throw new StorageError("Failed", "upload aborted; the multipart upload was cancelled", {
          backend: this.kind,
          op: "put",
          object: name,
          cause: options.signal.reason ?? err,
        });
      }
      throw this.meta.error(err, "put", name);
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  #tooManyParts(name: string): StorageError {
    return new StorageError(
      "TooLarge",
      `the archive needs more than ${MAX_PARTS} parts of ${this.partSize / MiB} MiB: raise ` +
        `PLUGIN_PART_SIZE_MB (or the maximum upload size setting, which grows the part size)`,
      { backend: this.kind, op: "put", object: name },
    );
  }

  /** Aborts a multipart upload (its stored parts are discarded); a failure is logged, not thrown. */
  async #abortUpload(name: string, uploadId: string): Promise<void> {
    try {
      await this.meta.request({
        op: "put",
        object: name,
        part: "abort",
        method: "DELETE",
        url: this.meta.url(name, { uploadId }),
      });
    } catch (err) {
      if (httpStatus(err) === 404) return; // already gone
      this.#o.log?.warn(
        "s3: could not abort a failed multipart upload; its parts stay until a lifecycle rule removes them",
        { object: name, error: shortMessage(err) },
      );
    }
  }

  /**
   * Aborts multipart uploads under `prefix` started more than `olderThanMs`
   * ago (what saves killed with `kill -9` left); younger ones may belong to a
   * running save and stay. Returns how many were aborted.
   *
   * @example
   * ```ts
   * await backend.sweepStale("key/");
   * ```
   */
  async sweepStale(prefix: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const { body } = await this.meta.request({
        op: "sweep",
        object: prefix,
        method: "GET",
        url: this.meta.url(undefined, {
          uploads: "",
          prefix,
          "key-marker": keyMarker,
          "upload-id-marker": uploadIdMarker,
        }),
        read: (res) => res.text(),
      });
      const xml = body as string;
      for (const m of xml.matchAll(/<Upload>([\s\S]*?)<\/Upload>/g)) {
        const key = xmlText(m[1], "Key");
        const id = xmlText(m[1], "UploadId");
        const initiated = xmlText(m[1], "Initiated");
        if (!key || !id || !initiated || !key.startsWith(prefix)) continue;
        // (0 sweeps all: the store's clock may run ahead of ours)
        if (olderThanMs > 0 && Date.now() - new Date(initiated).getTime() < olderThanMs) continue;
        await this.#abortUpload(key, id);
        removed++;
      }
      if (xmlText(xml, "IsTruncated") !== "true") break;
      keyMarker = xmlText(xml, "NextKeyMarker");
      uploadIdMarker = xmlText(xml, "NextUploadIdMarker");
      if (!keyMarker && !uploadIdMarker) break;
    }
    if (removed > 0) {
      this.#o.log?.info("s3: aborted stale multipart uploads of killed saves", { prefix, uploads: removed });
    }
    return removed;
  }

  async delete(name: string): Promise<void> {
    try {
      await this.meta.request({ op: "delete", object: name, method: "DELETE", url: this.meta.url(name) });
    } catch (err) {
      if (httpStatus(err) === 404 && !isCode(err, "NoSuchBucket")) return;
      throw this.meta.error(err, "delete", name);
    }
  }

  /**
   * Deletes many objects with DeleteObjects, {@link DELETE_BATCH} per call
   * (for flush). Missing objects are fine; any per-object error is thrown
   * after the batch, naming the first failed object.
   *
   * @example
   * ```ts
   * await backend.deleteMany(["key/a", "key/b"]);
   * ```
   */
  async deleteMany(names: readonly string[]): Promise<void> {
    for (let i = 0; i < names.length; i += DELETE_BATCH) {
      const batch = names.slice(i, i + DELETE_BATCH);
      const text = "<Delete><Quiet>true</Quiet>" +
        batch.map((k) => `<Object><Key>${escapeXml(k)}</Key></Object>`).join("") + "</Delete>";
      const xml = new TextEncoder().encode(text);
      let answer: string;
      try {
        answer = (await this.meta.request({
          op: "delete",
          object: batch[0],
          method: "POST",
          url: this.meta.url(undefined, { delete: "" }),
          headers: { "content-type": "application/xml", "content-md5": contentMd5(text) },
          body: xml,
          payloadHash: await sha256Hex(xml),
          read: (res) => res.text(),
        })).body as string;
      } catch (err) {
        throw this.meta.error(err, "delete", batch[0]);
      }
      for (const m of answer.matchAll(/<Error>([\s\S]*?)<\/Error>/g)) {
        const code = xmlText(m[1], "Code");
        if (code === "NoSuchKey") continue;
        const fake = Object.assign(new Error(xmlText(m[1], "Message") ?? code ?? "delete failed"), {
          name: code ?? "Error",
          Code: code,
          $metadata: { httpStatusCode: code === "AccessDenied" ? 403 : 500 },
        });
        throw this.meta.error(fake, "delete", xmlText(m[1], "Key") ?? batch[0]);
      }
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
