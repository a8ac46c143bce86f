/**
 * The azure backend without `@azure/storage-blob`, for a shared key or a
 * SAS: every request is a plain `fetch` through {@link AzureRest} (Shared
 * Key signing with WebCrypto, or the SAS in the query), so a save or a
 * restore of a small cache never loads the SDK (about 0.2 s of CPU before
 * the first byte moves). Same behaviour as the SDK backend (`backend.ts`):
 *
 * - `put`: one Put Blob for a stream shorter than one block; otherwise Put
 *   Block (`concurrency` in flight, block buffers reused, block size grown by
 *   {@link blockSizeAt}), then the byte count and the service's uncommitted
 *   block list are checked, then Put Block List commits. A failed or aborted
 *   save commits nothing: no partial blob, an older blob stays intact.
 * - `get`: ranges of at most 8 MiB through the shared ordered-ranges
 *   scheduler, pinned to the ETag with `If-Match` (the one the `stat` just
 *   before saw, else a properties call), restarted when the blob is
 *   replaced before the first byte went out.
 * - `delete` (snapshots included), {@link FetchAzureBackend.sweepStale}.
 *
 * Bodies of 4 MiB and more (blocks, a larger Put Blob) go over `node:http`
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
  type TransferOptions,
} from "../backend.ts";
import type { Logger } from "../../log.ts";
import { encodeMeta } from "../metadata.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";
import { orderedRanges, type RangeSink, streamRange } from "../transfer/ranges.ts";
import { restartingGet } from "../transfer/restart.ts";
import { xmlText } from "../transfer/xml.ts";
import { AZURE_MAX_BLOCKS, type AzureAccessTier, blockSizeFor, DOWNLOAD_RANGE_SIZE } from "./blocks.ts";
import { blobMissing, networkFailure, shortCause } from "./errors.ts";
import { ShortReadError } from "../transfer/body.ts";
import type { AzureRest } from "./rest.ts";
import { blockPut } from "./upload.ts";
import { type UploadAgent, withUploadAgent } from "../transfer/send_body.ts";
import type { AzureAuthInfo } from "./target.ts";

const KIND = "azure";
const MiB = 1024 * 1024;

/** Options of {@link FetchAzureBackend}. */
export interface FetchAzureOptions {
  /** Signs and sends the requests (service, container, credential, retry policy). */
  rest: AzureRest;
  /** Block size in bytes (default 16 MiB; grown to fit `maxObjectSize`). */
  partSize?: number;
  maxObjectSize?: number;
  /** Download range size (default: the part size, at most {@link DOWNLOAD_RANGE_SIZE}). */
  rangeSize?: number;
  /** Blocks or ranges in flight per transfer (default 4). */
  concurrency?: number;
  accessTier?: AzureAccessTier | "";
  /** Block limit (default {@link AZURE_MAX_BLOCKS}; tests lower it). */
  maxBlocks?: number;
  log?: Logger;
}

/** Discards an answer's body. */
const drain = async (res: Response) => void await res.body?.cancel();

/**
 * One container as a {@link Backend}, over `fetch` only.
 *
 * @example
 * ```ts
 * const backend = new FetchAzureBackend({ rest, partSize: 4 * 2 ** 20 });
 * await backend.put("key/node_modules", stream, { cicache_format: "zstd" });
 * ```
 */
export class FetchAzureBackend implements Backend {
  readonly kind = KIND;
  readonly rest: AzureRest;
  readonly partSize: number;
  readonly rangeSize: number;
  readonly concurrency: number;
  readonly #o: FetchAzureOptions;
  readonly #maxBlocks: number;
  /** What the last `stat` of a name saw: the download that follows pins to it instead of asking again. */
  readonly #pins = new StatPins();

  constructor(options: FetchAzureOptions) {
    this.#o = options;
    this.rest = options.rest;
    this.#maxBlocks = options.maxBlocks ?? AZURE_MAX_BLOCKS;
    this.partSize = blockSizeFor(options.partSize ?? 16 * MiB, options.maxObjectSize, this.#maxBlocks);
    this.rangeSize = Math.max(1, options.rangeSize ?? Math.min(this.partSize, DOWNLOAD_RANGE_SIZE));
    this.concurrency = Math.max(1, options.concurrency ?? 4);
  }

  /** The credential in use (as the SDK backend's `auth`). */
  get auth(): AzureAuthInfo {
    return this.rest.context.auth;
  }

  /** The container holding the cache objects. */
  get container(): string {
    return this.rest.context.container;
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    return this.#pins.remember(name, await this.rest.head(name, "stat"));
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.rest.list(prefix);
  }

  get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    return restartingGet(() => this.#getOnce(name, options), {
      log: this.#o.log,
      backend: KIND,
      object: name,
    });
  }

  /** One download pinned to the ETag seen by the `stat` before it (once), else by a properties call. */
  async #getOnce(name: string, options: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    const outer = options.signal;
    const pinned = await this.#pins.take(name, () => this.rest.head(name, "get")); // a restart asks again
    if (pinned === null) {
      throw new NotFoundError(`blob "${name}" not found in container "${this.rest.context.container}"`, {
        backend: KIND,
        op: "get",
        object: name,
      });
    }
    const { size, etag } = pinned;
    const read = (offset: number, count: number, sink: RangeSink, signal: AbortSignal) =>
      this.rest.request({
        op: "get",
        object: name,
        part: `range ${offset}-${offset + count - 1}`,
        method: "GET",
        url: this.rest.url(name),
        headers: {
          "x-ms-range": `bytes=${offset}-${offset + count - 1}`,
          ...(etag ? { "if-match": etag } : {}),
        },
        signal,
        read: async (res, attempt) => {
          // A body that breaks off is a network failure (retried), as in the SDK backend.
          await streamRange(res.body!, count, sink, attempt.signal, attempt.touch).catch((err) => {
            throw attempt.signal.aborted || err instanceof ShortReadError ? err : networkFailure(err);
          });
        },
      });
    return orderedRanges({
      size,
      rangeSize: this.rangeSize,
      concurrency: this.concurrency,
      signal: outer,
      read,
    });
  }

  /** Headers of a new blob (Put Blob, Put Block List): type, metadata, tier. */
  #blobHeaders(meta: ObjectMeta, contentTypeHeader: string): Record<string, string> {
    const headers: Record<string, string> = { [contentTypeHeader]: "application/octet-stream" };
    for (const [k, v] of Object.entries(encodeMeta(meta))) headers[`x-ms-meta-${k}`] = v;
    if (this.#o.accessTier) headers["x-ms-access-tier"] = this.#o.accessTier;
    return headers;
  }

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions = {},
  ): Promise<void> {
    await withUploadAgent(
      this.rest.url(name),
      this.concurrency + 1,
      (agent) => this.#put(name, body, meta, options, agent),
    );
  }

  /** One Put Blob, or blocks and a block list. */
  async #put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions,
    agent: UploadAgent,
  ): Promise<void> {
    const plan = {
      object: name,
      partSize: this.partSize,
      concurrency: this.concurrency,
      maxBlocks: this.#maxBlocks,
    };
    const request = (
      r: { method: string; url: URL; headers?: Record<string, string>; part?: string },
      data: Uint8Array<ArrayBuffer>,
      signal: AbortSignal,
    ) => this.rest.request({ op: "put", object: name, ...r, body: data, signal, agent, read: drain });
    await blockPut(body, options, plan, {
      single: (data, signal) =>
        request(
          {
            method: "PUT",
            url: this.rest.url(name),
            headers: { ...this.#blobHeaders(meta, "content-type"), "x-ms-blob-type": "BlockBlob" },
          },
          data,
          signal,
        ),
      stage: (id, data, signal, index) =>
        request(
          { method: "PUT", url: this.rest.url(name, { comp: "block", blockid: id }), part: `block ${index}` },
          data,
          signal,
        ),
      uncommitted: async (signal) => {
        const xml = await this.rest.request({
          op: "put",
          object: name,
          method: "GET",
          url: this.rest.url(name, { comp: "blocklist", blocklisttype: "uncommitted" }),
          signal,
          read: (res) => res.text(),
        });
        const onService = new Map<string, number>();
        const uncommitted = /<UncommittedBlocks>([\s\S]*?)<\/UncommittedBlocks>/.exec(xml)?.[1] ?? "";
        for (const m of uncommitted.matchAll(/<Block>([\s\S]*?)<\/Block>/g)) {
          onService.set(xmlText(m[1], "Name") ?? "", Number(xmlText(m[1], "Size")));
        }
        return onService;
      },
      commit: (ids, signal) =>
        request(
          {
            method: "PUT",
            url: this.rest.url(name, { comp: "blocklist" }),
            headers: {
              ...this.#blobHeaders(meta, "x-ms-blob-content-type"),
              "content-type": "application/xml",
            },
          },
          new TextEncoder().encode(
            `<?xml version="1.0" encoding="utf-8"?><BlockList>` +
              ids.map((id) => `<Latest>${id}</Latest>`).join("") + "</BlockList>",
          ),
          signal,
        ),
    });
  }

  /**
   * Discards blobs under `prefix` that hold only uncommitted blocks staged
   * more than `olderThanMs` ago (what killed saves left), as the SDK backend
   * does: an empty commit only if no blob exists (If-None-Match: *), then a
   * delete of that empty blob (If-Match). Failures are logged, never thrown.
   *
   * @example
   * ```ts
   * await backend.sweepStale("key/");
   * ```
   */
  async sweepStale(prefix: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    const names = async (uncommitted: boolean) => {
      const out = new Map<string, Date | undefined>();
      let marker: string | undefined;
      do {
        const xml = await this.rest.request({
          op: "sweep",
          object: prefix,
          method: "GET",
          url: this.rest.url(undefined, {
            restype: "container",
            comp: "list",
            prefix: prefix || undefined,
            include: uncommitted ? "uncommittedblobs" : undefined,
            maxresults: String(this.rest.listPageSize),
            marker,
          }),
          read: (res) => res.text(),
        });
        for (const m of xml.matchAll(/<Blob>([\s\S]*?)<\/Blob>/g)) {
          const name = xmlText(m[1], "Name");
          const modified = xmlText(m[1], "Last-Modified");
          if (name !== undefined) out.set(name, modified ? new Date(modified) : undefined);
        }
        marker = xmlText(xml, "NextMarker") || undefined;
      } while (marker);
      return out;
    };
    let removed = 0;
    try {
      const committed = await names(false);
      for (const [name, modified] of await names(true)) {
        if (committed.has(name) || !modified || Date.now() - modified.getTime() < olderThanMs) continue;
        try {
          const etag = await this.rest.request({
            op: "sweep",
            object: name,
            method: "PUT",
            url: this.rest.url(name, { comp: "blocklist" }),
            headers: { "if-none-match": "*", "content-type": "application/xml" },
            body: new TextEncoder().encode(`<?xml version="1.0" encoding="utf-8"?><BlockList></BlockList>`),
            read: async (res) => (await drain(res), res.headers.get("etag") ?? ""),
          });
          await this.rest.request({
            op: "sweep",
            object: name,
            method: "DELETE",
            url: this.rest.url(name),
            headers: { "if-match": etag },
            read: drain,
          });
          removed++;
        } catch (err) {
          // 409/412: a save committed the name meanwhile; that commit discarded the blocks anyway.
          this.#o.log?.debug("azure: could not discard stale uncommitted blocks", {
            object: name,
            error: shortCause(err),
          });
        }
      }
    } catch (err) {
      this.#o.log?.warn("azure: could not look for stale uncommitted blocks", {
        prefix,
        error: shortCause(err),
      });
    }
    if (removed > 0) {
      this.#o.log?.info("azure: discarded stale uncommitted blocks of killed saves", {
        prefix,
        blobs: removed,
      });
    }
    return removed;
  }

  async delete(name: string): Promise<void> {
    try {
      await this.rest.request({
        op: "delete",
        object: name,
        method: "DELETE",
        url: this.rest.url(name),
        headers: { "x-ms-delete-snapshots": "include" },
        read: drain,
      });
    } catch (err) {
      if (err instanceof NotFoundError && blobMissing(err.cause)) return;
      throw err;
    }
  }

  async close(): Promise<void> {}
}
