/**
 * The azure backend's metadata requests without the SDK: Create Container
 * and a one-blob listing (the start-up check, {@link ensureContainer}), Get
 * Blob Properties (`stat`) and List Blobs (`list`) as plain `fetch` requests,
 * authorized with the account's Shared Key ({@link sharedKeyAuthorization},
 * WebCrypto HMAC-SHA256) or a SAS in the query. They decide a restore miss,
 * so a miss never loads `@azure/storage-blob` (about 0.2 s of CPU); the
 * transfers keep the SDK (`backend.ts`), loaded when one starts.
 *
 * Same behaviour as the SDK path: the shared retry and idle timeout on every
 * request, errors shaped like the SDK's (status, `x-ms-error-code`,
 * `Retry-After`) so {@link azureError} gives the same typed errors and
 * messages.
 *
 * @module
 */
import { NotFoundError, type ObjectInfo, StorageError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import { unescapeXml, xmlText } from "../transfer/xml.ts";
import { decodeMeta } from "../metadata.ts";
import {
  type Attempt,
  IdleTimeoutError,
  parseRetryAfter,
  type RetryPolicy,
  withRetry,
} from "../transfer/retry.ts";
import { ensureContainer } from "./container.ts";
import { sendBody, STREAMED_BODY_MIN, type UploadAgent } from "../transfer/send_body.ts";
import {
  AttemptTimeout,
  azureError,
  type AzureErrorContext,
  blobMissing,
  isRetriable,
  networkFailure,
  retryAfterOf,
} from "./errors.ts";

/** REST API version (the one the SDK and the ranged reads speak). */
export const AZURE_API_VERSION = "2026-10-06";

/** The credential of the requests: the account key, or a SAS query. */
export type AzureRestCredential =
  | { kind: "shared-key"; accountName: string; accountKey: string }
  | { kind: "sas"; sas: string };

const encoder = new TextEncoder();

/** Azure's HMAC key from the base64 account key (imported once per key). */
const keys = new Map<string, Promise<CryptoKey>>();
function hmacKey(accountKey: string): Promise<CryptoKey> {
  let key = keys.get(accountKey);
  if (!key) {
    const raw = Uint8Array.from(atob(accountKey), (c) => c.charCodeAt(0));
    key = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(accountKey, key);
  }
  return key;
}

/**
 * The Shared Key `Authorization` header of a Blob service request (the
 * string to sign of API versions 2015-02-21 and later, as the SDK builds
 * it): the standard headers in their fixed order (an empty Content-Length
 * for 0), the `x-ms-*` headers sorted, then `/<account><path>` and the
 * query parameters, lower-cased, sorted, decoded.
 *
 * @example
 * ```ts
 * const headers = { "x-ms-date": new Date().toUTCString(), "x-ms-version": AZURE_API_VERSION };
 * headers.authorization = await sharedKeyAuthorization("HEAD", url, headers, "devstoreaccount1", key);
 * ```
 */
export async function sharedKeyAuthorization(
  method: string,
  url: URL,
  headers: Record<string, string>,
  accountName: string,
  accountKey: string,
): Promise<string> {
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v;
  const length = h["content-length"];
  const standard = [
    method.toUpperCase(),
    h["content-encoding"] ?? "",
    h["content-language"] ?? "",
    length === undefined || length === "0" ? "" : length,
    h["content-md5"] ?? "",
    h["content-type"] ?? "",
    "", // Date: x-ms-date is sent instead
    h["if-modified-since"] ?? "",
    h["if-match"] ?? "",
    h["if-none-match"] ?? "",
    h["if-unmodified-since"] ?? "",
    h["range"] ?? "",
  ];
  const msHeaders = Object.keys(h).filter((k) => k.startsWith("x-ms-")).sort()
    .map((k) => `${k}:${h[k].trimStart()}\n`).join("");
  const params = new Map<string, string[]>();
  for (const [k, v] of url.searchParams) {
    const name = k.toLowerCase();
    params.set(name, [...(params.get(name) ?? []), v]);
  }
  const query = [...params.keys()].sort().map((k) => `\n${k}:${params.get(k)!.sort().join(",")}`).join("");
  const stringToSign = `${standard.join("\n")}\n${msHeaders}/${accountName}${url.pathname || "/"}${query}`;
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(accountKey), encoder.encode(stringToSign));
  let bin = "";
  for (const b of new Uint8Array(mac)) bin += String.fromCharCode(b);
  return `SharedKey ${accountName}:${btoa(bin)}`;
}

/** A blob name as a URL path: every segment encoded, slashes kept. */
function encodeBlobName(name: string): string {
  return name.split("/").map(encodeURIComponent).join("/");
}

/** One request of {@link AzureRest.request}. */
export interface AzureRequest<T> {
  /** Operation and object for retry lines and errors. */
  op: string;
  object?: string;
  /** Names the block or range in retry lines. */
  part?: string;
  method: string;
  url: URL;
  /** Extra headers (signed with a shared key). */
  headers?: Record<string, string>;
  body?: Uint8Array<ArrayBuffer>;
  /** Aborts the request and its retries (its reason is thrown). */
  signal?: AbortSignal;
  /** Connections kept between the requests of one upload (bodies of {@link STREAMED_BODY_MIN} or more). */
  agent?: UploadAgent;
  /** Reads the answer inside the attempt. */
  read: (res: Response, attempt: Attempt) => Promise<T>;
}

/** Options of {@link AzureRest}. */
export interface AzureRestOptions {
  /** Blob service URL without a query (`https://<account>.blob.core.windows.net`, Azurite's `…/devstoreaccount1`). */
  serviceUrl: string;
  credential: AzureRestCredential;
  /** What error messages name (credential, container, SAS parameters). */
  context: AzureErrorContext;
  policy: RetryPolicy;
  /** Blobs per List Blobs page (default 1000). */
  listPageSize?: number;
  log?: Logger;
}

/**
 * Container check, Get Blob Properties and List Blobs against one container,
 * over `fetch`.
 *
 * @example
 * ```ts
 * const rest = new AzureRest({ serviceUrl, credential: { kind: "shared-key", accountName, accountKey },
 *   context, policy: DEFAULT_RETRY_POLICY });
 * await rest.ensureContainer();
 * const info = await rest.stat("key/node_modules"); // null on a miss
 * ```
 */
export class AzureRest {
  readonly #o: AzureRestOptions;

  constructor(options: AzureRestOptions) {
    this.#o = options;
  }

  #url(blob: string | undefined, query: Record<string, string | undefined>): URL {
    const container = this.#o.context.container;
    const url = new URL(
      `${this.#o.serviceUrl}/${container}${blob !== undefined ? `/${encodeBlobName(blob)}` : ""}`,
    );
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, v);
    if (this.#o.credential.kind === "sas") {
      for (const [k, v] of new URLSearchParams(this.#o.credential.sas.replace(/^\?/, ""))) {
        params.append(k, v);
      }
    }
    url.search = params.toString();
    return url;
  }

  /** One authorized request through the shared retry; a non-2xx answer throws the SDK-shaped error. */
  #request<T>(
    op: string,
    object: string | undefined,
    method: string,
    url: URL,
    read: (res: Response) => Promise<T>,
  ): Promise<T> {
    return this.request({ op, object, method, url, read });
  }

  /**
   * The URL of a blob (`blob`) or of the container (`blob` undefined) with
   * `query`, and the SAS when that is the credential.
   */
  url(blob: string | undefined, query: Record<string, string | undefined> = {}): URL {
    return this.#url(blob, query);
  }

  /**
   * One authorized request (Shared Key or SAS) through the shared retry:
   * idle timeout, jitter, `Retry-After`, a warn line per retry naming the
   * object and `part`. A non-2xx answer fails with the typed error of
   * {@link azureError} (what to fix); an abort of `signal` throws its
   * reason. `read` consumes the answer inside the attempt (a broken body is
   * retried too).
   *
   * @example
   * ```ts
   * await rest.request({ op: "delete", object: name, method: "DELETE", url: rest.url(name),
   *   read: async (res) => void await res.body?.cancel() });
   * ```
   */
  async request<T>(r: AzureRequest<T>): Promise<T> {
    let attempts = 0;
    try {
      return await withRetry(async (attempt) => {
        const { signal, touch } = attempt;
        attempts++;
        const headers: Record<string, string> = {
          ...r.headers,
          "x-ms-date": new Date().toUTCString(),
          "x-ms-version": AZURE_API_VERSION,
        };
        if (r.method === "PUT" || r.body !== undefined) {
          headers["content-length"] = String(r.body?.length ?? 0);
        }
        const c = this.#o.credential;
        if (c.kind === "shared-key") {
          headers.authorization = await sharedKeyAuthorization(
            r.method,
            r.url,
            headers,
            c.accountName,
            c.accountKey,
          );
        }
        if (r.body !== undefined) delete headers["content-length"]; // set from the body (same value)
        let res: Response;
        try {
          res = r.body && r.body.length >= STREAMED_BODY_MIN
            ? await sendBody(r.url, {
              method: r.method,
              headers,
              body: r.body,
              signal,
              touch,
              agent: r.agent,
            })
            : await fetch(r.url, { method: r.method, headers, body: r.body, signal });
        } catch (err) {
          throw signal.aborted ? signal.reason ?? err : networkFailure(err);
        }
        touch();
        if (res.status >= 300) {
          // As the SDK reports it: the service's message (HEAD has none), the error code, Retry-After.
          const text = r.method === "HEAD" ? "" : await res.text().catch(() => "");
          throw Object.assign(new Error(xmlText(text, "Message") ?? (text.slice(0, 300) || res.statusText)), {
            statusCode: res.status,
            code: res.headers.get("x-ms-error-code") ?? xmlText(text, "Code"),
            retryAfter: res.headers.get("retry-after") ?? undefined,
          });
        }
        return await r.read(res, attempt);
      }, {
        policy: this.#o.policy,
        retryable: isRetriable,
        retryAfterMs: (err) => parseRetryAfter(retryAfterOf(err)),
        signal: r.signal,
        log: this.#o.log,
        what: {
          backend: "azure",
          op: r.op,
          ...(r.object !== undefined ? { object: r.object } : {}),
          ...(r.part ? { part: r.part } : {}),
        },
      });
    } catch (raw) {
      if (r.signal?.aborted) throw r.signal.reason ?? raw;
      if (raw instanceof StorageError) throw raw;
      const err = raw instanceof IdleTimeoutError ? new AttemptTimeout(raw.ms) : raw;
      throw azureError(r.op, r.object, err, attempts, this.#o.context);
    }
  }

  /** What error messages name (credential, container, SAS parameters). */
  get context(): AzureErrorContext {
    return this.#o.context;
  }

  /** Blobs per List Blobs page. */
  get listPageSize(): number {
    return this.#o.listPageSize ?? 1000;
  }

  /** Creates the container when missing, or checks an existing one may be listed. */
  ensureContainer(): Promise<void> {
    const drain = (res: Response) => res.body?.cancel() ?? Promise.resolve();
    return ensureContainer({
      create: () =>
        this.#request("connect", undefined, "PUT", this.#url(undefined, { restype: "container" }), drain),
      probe: () =>
        this.#request(
          "connect",
          undefined,
          "GET",
          this.#url(undefined, { restype: "container", comp: "list", maxresults: "1" }),
          drain,
        ),
      context: this.#o.context,
      timeoutMs: this.#o.policy.idleMs,
      log: this.#o.log,
    });
  }

  /** Get Blob Properties: size, time and metadata, or null when the blob does not exist. */
  async stat(name: string): Promise<ObjectInfo | null> {
    return (await this.head(name, "stat"))?.info ?? null;
  }

  /**
   * Get Blob Properties with the ETag (what a download pins its ranges to),
   * or null when the blob does not exist.
   */
  async head(name: string, op = "stat"): Promise<{ info: ObjectInfo; etag?: string } | null> {
    let headers: Headers;
    try {
      headers = await this.#request(op, name, "HEAD", this.#url(name, {}), (res) => {
        res.body?.cancel();
        return Promise.resolve(res.headers);
      });
    } catch (err) {
      if (err instanceof NotFoundError && blobMissing(err.cause)) return null;
      throw err;
    }
    const meta: Record<string, string> = {};
    for (const [k, v] of headers) if (k.startsWith("x-ms-meta-")) meta[k.slice(10)] = v;
    const modified = headers.get("last-modified");
    return {
      info: {
        name,
        size: Number(headers.get("content-length") ?? 0),
        modified: modified ? new Date(modified) : new Date(0),
        meta: decodeMeta(meta),
      },
      etag: headers.get("etag") ?? undefined,
    };
  }

  /** List Blobs with metadata, every page, blobs whose name starts with `prefix`. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let marker: string | undefined;
    do {
      const url = this.#url(undefined, {
        restype: "container",
        comp: "list",
        prefix: prefix || undefined,
        include: "metadata",
        maxresults: String(this.#o.listPageSize ?? 1000),
        marker,
      });
      const xml = await this.#request("list", prefix, "GET", url, (res) => res.text());
      for (const m of xml.matchAll(/<Blob>([\s\S]*?)<\/Blob>/g)) {
        const name = xmlText(m[1], "Name");
        if (name === undefined) continue;
        const meta: Record<string, string> = {};
        const block = /<Metadata>([\s\S]*?)<\/Metadata>/.exec(m[1])?.[1] ?? "";
        for (const e of block.matchAll(/<([^\s>/]+)>([\s\S]*?)<\/\1>/g)) meta[e[1]] = unescapeXml(e[2]);
        const modified = xmlText(m[1], "Last-Modified");
        yield {
          name,
          size: Number(xmlText(m[1], "Content-Length") ?? 0),
          modified: modified ? new Date(modified) : new Date(0),
          meta: decodeMeta(meta),
        };
      }
      marker = xmlText(xml, "NextMarker") || undefined;
    } while (marker);
  }
}
