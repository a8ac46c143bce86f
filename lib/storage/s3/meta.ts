/**
 * The s3 backend's metadata requests without the AWS SDK: HeadBucket (the
 * start-up check), HeadObject (`stat`) and ListObjectsV2 (`list`) as plain
 * `fetch` requests signed with SigV4 ({@link signV4}, WebCrypto). They decide
 * a restore miss, so a miss never loads the SDK (about 0.2 s of CPU); the
 * transfers keep the SDK (`backend.ts`), loaded when one starts.
 *
 * Same behaviour as the SDK path: the shared retry and idle timeout
 * ({@link withRetry}) on every request, errors shaped like the SDK's (HTTP
 * status, S3 error code, `Retry-After`) so {@link s3Error} gives the same
 * typed errors and messages, a 403/400 on a HEAD (which has no body to tell
 * why) asked again with a one-byte GET.
 *
 * @module
 */
import type { ObjectInfo, StorageError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import { xmlText } from "../transfer/xml.ts";
import { type Attempt, parseRetryAfter, type RetryPolicy, withRetry } from "../transfer/retry.ts";
import { encodeS3Key, rfc3986, signV4, type SigV4Credentials } from "./sigv4.ts";
import {
  httpStatus,
  isCode,
  normalizeMeta,
  retryAfterHeader,
  s3Error,
  type S3ErrorContext,
  type SdkErrorShape,
  transient,
} from "./errors.ts";
import { isCredentialError } from "./credentials.ts";
import { sendBody, STREAMED_BODY_MIN, type UploadAgent } from "../transfer/send_body.ts";

/** One request of {@link S3Meta.request}. */
export interface S3Request {
  /** Operation and object for retry lines. */
  op: string;
  object?: string;
  /** Names the part or range in retry lines. */
  part?: string;
  method: string;
  url: URL;
  /** Extra headers, signed. */
  headers?: Record<string, string>;
  body?: Uint8Array<ArrayBuffer>;
  /** Hex SHA-256 of `body` (default: of the empty body). */
  payloadHash?: string;
  /** Aborts the request and its retries. */
  signal?: AbortSignal;
  /** Connections kept between the requests of one upload (bodies of {@link STREAMED_BODY_MIN} or more). */
  agent?: UploadAgent;
  /** Reads the answer inside the attempt (a failure there is retried when transient). */
  read?: (res: Response, attempt: Attempt) => Promise<unknown>;
}

/** Where and as whom the requests go. */
export interface S3MetaOptions extends S3ErrorContext {
  /** `https://s3.<region>.amazonaws.com` or the custom endpoint (no trailing slash, no path). */
  endpoint: string;
  /** Bucket in the path (`endpoint/bucket/key`) instead of the host (`bucket.host/key`). */
  pathStyle: boolean;
  region: string;
  credentials: SigV4Credentials;
  policy: RetryPolicy;
  /** MaxKeys per ListObjectsV2 page (default 1000). */
  listPageSize?: number;
  log?: Logger;
}

/** An S3 error from a fetch response, shaped as the SDK shapes its errors. */
export class S3HttpError extends Error implements SdkErrorShape {
  readonly Code?: string;
  readonly $metadata: { httpStatusCode: number };
  readonly $response: { headers: Record<string, string> };
  constructor(status: number, code: string | undefined, message: string, headers: Headers) {
    super(message || code || `HTTP ${status}`);
    this.name = code || STATUS_NAMES[status] || `Http${status}`;
    this.Code = code;
    this.$metadata = { httpStatusCode: status };
    this.$response = { headers: Object.fromEntries(headers) };
  }
}

/** The SDK's error names for bodiless answers (HEAD). */
const STATUS_NAMES: Record<number, string> = {
  301: "MovedPermanently",
  400: "BadRequest",
  403: "Forbidden",
  404: "NotFound",
};

/** A fetch that failed before any answer, with a Node-style code the error mapping knows. */
export function networkError(err: unknown): unknown {
  if (!(err instanceof TypeError)) return err;
  const text = String(err.message);
  const code = /refused/i.test(text)
    ? "ECONNREFUSED"
    : /dns|lookup|resolve/i.test(text)
    ? "ENOTFOUND"
    : /reset/i.test(text)
    ? "ECONNRESET"
    : "NetworkingError";
  return Object.assign(new Error(text, { cause: err }), { name: code, code });
}

/**
 * HeadBucket, HeadObject and ListObjectsV2 against one bucket, over `fetch`.
 *
 * @example
 * ```ts
 * const meta = new S3Meta({ endpoint: "http://127.0.0.1:8080", pathStyle: true, region: "us-east-1",
 *   bucket: "cache", credentials: { accessKeyId: "AKID", secretAccessKey: "secret" },
 *   policy: DEFAULT_RETRY_POLICY });
 * const info = await meta.stat("key/node_modules"); // null on a miss
 * ```
 */
export class S3Meta {
  readonly #o: S3MetaOptions;
  readonly #base: URL;

  constructor(options: S3MetaOptions) {
    this.#o = options;
    const base = new URL(options.endpoint);
    if (options.pathStyle) {
      base.pathname = `/${encodeS3Key(options.bucket)}/`;
    } else {
      base.hostname = `${options.bucket}.${base.hostname}`;
      base.pathname = "/";
    }
    this.#base = base;
  }

  /** The URL of an object (`key`) or of the bucket (`key` undefined) with `query` (signed as sent). */
  url(key: string | undefined, query: Record<string, string | undefined> = {}): URL {
    const url = new URL(this.#base.href);
    if (key !== undefined) url.pathname += encodeS3Key(key);
    else if (this.#o.pathStyle) url.pathname = url.pathname.replace(/\/$/, "");
    // Sent exactly as SigV4 canonicalises it (RFC 3986), not URLSearchParams' form encoding.
    url.search = Object.entries(query).filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${rfc3986(k)}=${rfc3986(v!)}`).join("&");
    return url;
  }

  /** One signed request through the shared retry; a non-2xx answer throws an {@link S3HttpError}. */
  #request(
    op: string,
    object: string | undefined,
    method: string,
    url: URL,
    headers: Record<string, string> = {},
    read?: (res: Response, attempt: Attempt) => Promise<unknown>,
  ): Promise<{ res: Response; body: unknown }> {
    return this.request({ op, object, method, url, headers, read });
  }

  /**
   * One signed request through the shared retry (idle timeout, jitter,
   * `Retry-After`, a warn line per retry naming the object and `part`); a
   * non-2xx answer throws an {@link S3HttpError} (mapped by {@link s3Error}
   * at the caller). `read` consumes the answer inside the attempt, so a
   * broken body is retried too; by default the body is discarded.
   *
   * @example
   * ```ts
   * const { body } = await meta.request({ op: "list", method: "GET", url: meta.url(undefined, { uploads: "" }),
   *   read: (res) => res.text() });
   * ```
   */
  request(r: S3Request): Promise<{ res: Response; body: unknown }> {
    const read = r.read ?? ((res: Response) => res.body?.cancel() ?? Promise.resolve());
    return withRetry(async (attempt) => {
      const signed = await signV4(
        { method: r.method, url: r.url, headers: r.headers ?? {}, payloadHash: r.payloadHash },
        this.#o.credentials,
        this.#o.region,
      );
      delete signed["host"]; // fetch sends it from the URL (the same value)
      let res: Response;
      try {
        res = r.body && r.body.length >= STREAMED_BODY_MIN
          ? await sendBody(r.url, {
            method: r.method,
            headers: signed,
            body: r.body,
            signal: attempt.signal,
            touch: attempt.touch,
            agent: r.agent,
          })
          : await fetch(r.url, { method: r.method, headers: signed, body: r.body, signal: attempt.signal });
      } catch (err) {
        throw attempt.signal.aborted ? attempt.signal.reason ?? err : networkError(err);
      }
      attempt.touch();
      if (res.status >= 300) {
        const text = r.method === "HEAD" ? "" : await res.text().catch(() => "");
        throw new S3HttpError(res.status, xmlText(text, "Code"), xmlText(text, "Message") ?? "", res.headers);
      }
      return { res, body: await read(res, attempt) };
    }, {
      policy: this.#o.policy,
      retryable: transient,
      retryAfterMs: (err) => parseRetryAfter(retryAfterHeader(err)),
      signal: r.signal,
      log: this.#o.log,
      what: {
        backend: "s3",
        op: r.op,
        ...(r.object !== undefined ? { object: r.object } : {}),
        ...(r.part ? { part: r.part } : {}),
      },
    });
  }

  /** Maps an error of a request of this bucket to the typed {@link StorageError} (what to fix). */
  error(err: unknown, op: string, object?: string): StorageError {
    return s3Error(err, op, object, this.#o);
  }

  /** What error messages name (bucket, endpoint, credential hint). */
  get context(): S3ErrorContext {
    return this.#o;
  }

  /**
   * Checks the bucket answers with these credentials (HeadBucket; on a
   * 403/400/301, which a HEAD cannot explain, a one-key list tells why). A
   * plain "access denied" passes: the identity may have object rights only.
   */
  async check(): Promise<void> {
    try {
      await this.#request("connect", undefined, "HEAD", this.url(undefined));
    } catch (err) {
      const status = httpStatus(err);
      if (!isCredentialError(err) && (status === 403 || status === 400 || status === 301)) {
        try {
          await this.#request(
            "connect",
            undefined,
            "GET",
            this.url(undefined, { "list-type": "2", "max-keys": "1" }),
          );
          return;
        } catch (err2) {
          const mapped = this.error(err2, "connect");
          if (mapped.code === "AccessDenied") {
            this.#o.log?.debug("s3: may not list the bucket; continuing with object operations", {
              bucket: this.#o.bucket,
            });
            return;
          }
          throw mapped;
        }
      }
      throw this.error(err, "connect");
    }
  }

  /** HeadObject: the object's size, time and metadata, or null when it does not exist. */
  async stat(name: string): Promise<ObjectInfo | null> {
    return (await this.head(name, "stat"))?.info ?? null;
  }

  /**
   * HeadObject with the ETag (what a download pins its ranges to), or null
   * when the object does not exist.
   */
  async head(name: string, op = "stat"): Promise<{ info: ObjectInfo; etag?: string } | null> {
    let res: Response;
    try {
      res = (await this.#request(op, name, "HEAD", this.url(name))).res;
    } catch (err) {
      if (httpStatus(err) === 404 && !isCode(err, "NoSuchBucket")) return null;
      throw await this.#diagnose(err, op, name);
    }
    const meta: Record<string, string> = {};
    for (const [k, v] of res.headers) if (k.startsWith("x-amz-meta-")) meta[k.slice(11)] = v;
    const modified = res.headers.get("last-modified");
    return {
      info: {
        name,
        size: Number(res.headers.get("content-length") ?? 0),
        modified: modified ? new Date(modified) : new Date(0),
        meta: normalizeMeta(meta),
      },
      etag: res.headers.get("etag") ?? undefined,
    };
  }

  /** A HEAD's 403/400 has no body: a one-byte GET tells a bad key from a denial. */
  async #diagnose(err: unknown, op: string, name: string) {
    if (httpStatus(err) === 403 || httpStatus(err) === 400) {
      try {
        const url = this.url(name);
        const signed = await signV4(
          { method: "GET", url, headers: { range: "bytes=0-0" } },
          this.#o.credentials,
          this.#o.region,
        );
        delete signed["host"];
        const res = await fetch(url, {
          headers: signed,
          signal: AbortSignal.timeout(this.#o.policy.idleMs || 60_000),
        });
        const text = res.status >= 300 ? await res.text() : (await res.body?.cancel(), "");
        if (res.status >= 300 && res.status !== 404 && res.status !== 416) {
          return this.error(
            new S3HttpError(res.status, xmlText(text, "Code"), xmlText(text, "Message") ?? "", res.headers),
            op,
            name,
          );
        }
      } catch { /* keep the first error */ }
    }
    return this.error(err, op, name);
  }

  /** ListObjectsV2, every page, objects whose key starts with `prefix`. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let xml: string;
      try {
        const url = this.url(undefined, {
          "list-type": "2",
          prefix: prefix || undefined,
          "max-keys": String(Math.min(1000, Math.max(1, this.#o.listPageSize ?? 1000))),
          "continuation-token": token,
        });
        xml = (await this.#request("list", prefix, "GET", url, {}, (res) => res.text())).body as string;
      } catch (err) {
        throw this.error(err, "list", prefix);
      }
      for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
        const key = xmlText(m[1], "Key");
        if (key === undefined || !key.startsWith(prefix)) continue;
        const modified = xmlText(m[1], "LastModified");
        yield {
          name: key,
          size: Number(xmlText(m[1], "Size") ?? 0),
          modified: modified ? new Date(modified) : new Date(0),
          meta: {},
        };
      }
      token = xmlText(xml, "IsTruncated") === "true" ? xmlText(xml, "NextContinuationToken") : undefined;
    } while (token);
  }
}
