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
 * Bodies of 4 MiB and more (parts, a larger PutObject) go over `node:http`
 * (`../transfer/send_body.ts` says why), with the connections kept for the
 * save's requests and closed when it ends; each 1 MiB written counts as
 * progress for the idle timeout. Smaller bodies go over `fetch`.
 *
 * @module
 */
import { StatPins } from "../transfer/pins.ts";
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
import { DELETE_BATCH, DOWNLOAD_RANGE_SIZE, partSizeFor } from "./parts.ts";
import { multipartPut } from "./upload.ts";
import { type UploadAgent, withUploadAgent } from "../transfer/send_body.ts";

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

/** Payloads from this size on are hashed by `node:crypto` (loaded on first use), smaller ones by WebCrypto. */
const HASH_IN_PLACE = 1 << 20;

/**
 * Hex SHA-256 of `data`, the payload hash SigV4 signs. WebCrypto's digest copies its input: for a 16 MiB
 * part with 4 in flight that copy held 25–30 MB of peak RSS per save until a later GC (S3 zstd save of
 * the bench tree: 233–234 MB, against 201–211 MB hashed in place, same CPU and wall in alternating pairs).
 * `node:crypto` reads the part where it is; small payloads (a save of a few KB, the XML bodies) keep to
 * WebCrypto, so a small save loads no Node module.
 */
async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  if (data.length >= HASH_IN_PLACE) {
    const { createHash } = await import("node:crypto");
    return createHash("sha256").update(data).digest("hex");
  }
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
  readonly #pins = new StatPins();

  constructor(options: FetchS3Options) {
    this.#o = options;
    this.meta = options.meta;
    this.partSize = partSizeFor(options.partSize ?? 16 * MiB, options.maxObjectSize ?? 51200 * MiB);
    this.rangeSize = Math.max(1, options.rangeSize ?? Math.min(this.partSize, DOWNLOAD_RANGE_SIZE));
    this.concurrency = Math.max(1, options.concurrency ?? 4);
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    return this.#pins.remember(name, await this.meta.head(name, "stat"));
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
    const pinned = await this.#pins.take(name, () => this.meta.head(name, "get")); // a restart asks again
    if (pinned === null) {
      throw new NotFoundError(`no object "${name}" in bucket "${this.#o.bucket}"`, {
        backend: this.kind,
        op: "get",
        object: name,
      });
    }
    const { size, etag } = pinned;
    return orderedRanges({
      size,
      rangeSize: this.rangeSize,
      concurrency: this.concurrency,
      signal: options.signal,
      read: (start, count, sink, signal) =>
        this.#readRange(name, start, start + count - 1, etag, sink, signal),
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
    await withUploadAgent(
      this.meta.url(name),
      this.concurrency + 1,
      (agent) => this.#put(name, body, meta, options, agent),
    );
  }

  /** One PutObject, or a multipart upload. */
  async #put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions,
    agent: UploadAgent,
  ) {
    const headers = this.#objectHeaders(meta);
    // Leftovers of a killed save of this key (best effort: the identity may not list uploads).
    await this.sweepStale(name).catch((err) =>
      this.#o.log?.debug("s3: could not look for stale multipart uploads", {
        object: name,
        error: shortMessage(err),
      })
    );
    /** One upload request with a body, signed with the body's SHA-256. */
    const send = async (
      r: { part?: string; method: string; url: URL; headers?: Record<string, string> },
      data: Uint8Array<ArrayBuffer>,
      signal: AbortSignal,
      read?: (res: Response) => Promise<unknown>,
    ) => {
      const payloadHash = await sha256Hex(data);
      return (await this.meta.request({
        op: "put",
        object: name,
        ...r,
        body: data,
        payloadHash,
        signal,
        agent,
        read,
      })).res;
    };
    const plan = { object: name, partSize: this.partSize, concurrency: this.concurrency };
    await multipartPut(body, options, plan, {
      single: async (data, signal) => {
        await send({ method: "PUT", url: this.meta.url(name), headers }, data, signal);
      },
      create: async (signal) => {
        const { body } = await this.meta.request({
          op: "put",
          object: name,
          method: "POST",
          url: this.meta.url(name, { uploads: "" }),
          headers,
          signal,
          read: async (res) => {
            const xml = await res.text();
            errorInBody(xml, res.headers);
            return xml;
          },
        });
        const id = xmlText(body as string, "UploadId");
        if (!id) throw new Error("CreateMultipartUpload returned no UploadId");
        return id;
      },
      part: async (uploadId, number, data, signal) => {
        const url = this.meta.url(name, { partNumber: String(number), uploadId });
        const res = await send({ part: `part ${number}`, method: "PUT", url }, data, signal);
        const etag = res.headers.get("etag");
        if (!etag) throw new Error(`part ${number} came back without an ETag`);
        return etag;
      },
      complete: async (uploadId, parts, signal) => {
        const xml = new TextEncoder().encode(
          "<CompleteMultipartUpload>" +
            parts.map((p) =>
              `<Part><PartNumber>${p.number}</PartNumber><ETag>${escapeXml(p.etag)}</ETag></Part>`
            )
              .join("") +
            "</CompleteMultipartUpload>",
        );
        const url = this.meta.url(name, { uploadId });
        const headers = { "content-type": "application/xml" };
        await send(
          { part: "complete", method: "POST", url, headers },
          xml,
          signal,
          async (res) => errorInBody(await res.text(), res.headers),
        );
      },
      abort: (uploadId) => this.#abortUpload(name, uploadId),
      error: (err) => this.meta.error(err, "put", name),
    });
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

  async close(): Promise<void> {}
}
