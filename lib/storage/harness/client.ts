/**
 * The Harness cache service client (A§5.6): asks for pre-signed URLs and
 * lists entries. Query strings are byte-identical to the Go plugin's, order
 * included (`accountId` raw, then `cacheKey`/`cacheKeyPrefix` escaped with
 * Go's `url.QueryEscape`, then the extra parameters and `cacheType` sorted
 * by name as Go's `url.Values.Encode` does, `backend=` last), and the token
 * travels as `X-Harness-Token`. Redirects are not followed (as Go).
 *
 * Better than Go: every call is retried with jittered backoff (network
 * errors, 408/429/5xx, idle timeouts) and every answer the service can give
 * becomes a typed error that names the setting to fix. Pre-signed URLs carry
 * credentials in their query, so no message ever shows a query string.
 *
 * @module
 */
import {
  AccessDeniedError,
  AuthFailedError,
  InvalidSettingsError,
  NotFoundError,
  StorageError,
  UnavailableError,
} from "../backend.ts";
import type { Logger } from "../../log.ts";
import { IdleTimeoutError, parseRetryAfter, type RetryPolicy, withRetry } from "../transfer/retry.ts";

/** The service's URL endpoints. */
export type UrlEndpoint = "upload" | "download" | "exists";

/** One `list_entries` row (Go's default field names, matched case-insensitively). */
export interface ListEntry {
  path: string;
  size: number;
  modified: Date;
}

/** Options of {@link HarnessClient}. */
export interface HarnessClientOptions {
  /** `PLUGIN_CACHE_SERVICE_BASE_URL` (a trailing `/` is trimmed). */
  baseUrl: string;
  /** `PLUGIN_CACHE_SERVICE_BEARER_TOKEN`, sent as `X-Harness-Token` when non-empty. */
  token: string;
  /** `PLUGIN_ACCOUNT_ID`, inserted raw (as Go). */
  accountId: string;
  /** `PLUGIN_CACHE_TYPE`: non-blank selects the unified endpoints. */
  cacheType: string;
  /** `HARNESS_CI_USE_GCS_CACHE_SERVICE=true` sends `backend=gcs`, else `backend=s3`. */
  useGcs: boolean;
  policy: RetryPolicy;
  log?: Logger;
}

/**
 * Go's `url.QueryEscape`: everything but `A–Z a–z 0–9 - _ . ~` is
 * percent-encoded (upper-case hex), a space becomes `+`.
 *
 * @example
 * ```ts
 * goQueryEscape("a/b c+d"); // "a%2Fb+c%2Bd"
 * ```
 */
export function goQueryEscape(s: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(s)) {
    const plain = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) ||
      b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
    if (plain) out += String.fromCharCode(b);
    else if (b === 0x20) out += "+";
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** An HTTP answer that was not a success, from the service or from the storage behind a pre-signed URL. */
export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly from: "service" | "storage",
    readonly retryAfterMs: number | undefined,
    detail: string,
  ) {
    super(`${from === "service" ? "cache service" : "storage"} answered HTTP ${status}${detail}`);
    this.name = "HttpStatusError";
  }
}

/**
 * Whether a failure deserves another attempt: network errors, idle timeouts,
 * 408/429/5xx, and (for `storage`) 403, since an expired pre-signed URL is
 * renewed by the next attempt.
 */
export function retryable(err: unknown): boolean {
  if (err instanceof IdleTimeoutError) return true;
  if (err instanceof HttpStatusError) {
    return err.status === 408 || err.status === 429 || err.status >= 500 ||
      (err.from === "storage" && err.status === 403);
  }
  if (err instanceof StorageError) return false;
  // node:http (the part PUTs) says "socket hang up" (code ECONNRESET) when the connection drops mid-request.
  const code = String((err as { code?: unknown } | undefined)?.code ?? "");
  return err instanceof TypeError || /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN)$/.test(code) ||
    (err instanceof Error && /connection|reset|broken pipe|EOF|network|socket hang up/i.test(err.message));
}

/** The Retry-After a failure carries, if any. */
export function retryAfter(err: unknown): number | undefined {
  return err instanceof HttpStatusError ? err.retryAfterMs : undefined;
}

/**
 * Removes query strings (pre-signed credentials) from every URL in a text.
 *
 * @example
 * ```ts
 * redactUrls("error sending request for url (http://h/b/k?X-Amz-Signature=abc)"); // "… (http://h/b/k?…)"
 * ```
 */
export function redactUrls(text: string): string {
  return text.replace(/(\bhttps?:\/\/[^\s?#)"'<>]*)[?#][^\s)"'<>]*/g, "$1?…");
}

/** A short, safe excerpt of an error body. */
async function bodyExcerpt(res: Response): Promise<string> {
  const text = await res.text().catch(() => "");
  const line = redactUrls(text.replace(/\s+/g, " ").trim()).slice(0, 200);
  return line ? `: ${line}` : "";
}

/**
 * One cache service: builds the Go plugin's URLs and calls them.
 *
 * @example
 * ```ts
 * const client = new HarnessClient({ baseUrl, token, accountId: "acct", cacheType: "", useGcs: false, policy });
 * const url = await client.presign("download", "key/node_modules");
 * ```
 */
export class HarnessClient {
  readonly base: string;
  readonly #o: HarnessClientOptions;

  constructor(options: HarnessClientOptions) {
    this.#o = options;
    this.base = options.baseUrl.replace(/\/+$/, "");
  }

  /** `intel` (legacy) or `unified`. */
  get mode(): "intel" | "unified" {
    return this.#o.cacheType.trim() !== "" ? "unified" : "intel";
  }

  /**
   * The service URL for one call, byte-identical to the Go plugin's.
   *
   * @example
   * ```ts
   * client.endpoint("upload", "k", { key: "k", uploads: "" });
   * // <base>/cache/intel/upload?accountId=acct&cacheKey=k&key=k&uploads=&backend=s3
   * ```
   */
  endpoint(op: UrlEndpoint | "list_entries", key: string, extra: Record<string, string> = {}): string {
    const keyParam = op === "list_entries" ? "cacheKeyPrefix" : "cacheKey";
    let query = `accountId=${this.#o.accountId}&${keyParam}=${goQueryEscape(key)}`;
    const params: Record<string, string> = { ...extra };
    if (this.mode === "unified") params.cacheType = this.#o.cacheType;
    const names = Object.keys(params).sort();
    if (names.length > 0) {
      query += "&" + names.map((n) => `${goQueryEscape(n)}=${goQueryEscape(params[n])}`).join("&");
    }
    query += `&backend=${this.#o.useGcs ? "gcs" : "s3"}`;
    return `${this.base}/cache/${this.mode}/${op}?${query}`;
  }

  /**
   * Asks for a pre-signed URL (retried); the service answers it as plain text.
   * A 404 is a {@link NotFoundError} (a miss for `download` and `exists`).
   */
  async presign(
    op: UrlEndpoint,
    key: string,
    extra: Record<string, string> = {},
    signal?: AbortSignal,
  ): Promise<string> {
    const res = await this.#call(op, key, this.endpoint(op, key, extra), signal);
    const url = (await res.text()).trim();
    if (!/^https?:\/\//i.test(url)) {
      throw new StorageError("Failed", "the cache service answered something that is not a URL", {
        backend: "harness",
        op: `presign ${op}`,
        object: key,
      });
    }
    return url;
  }

  /** `list_entries` under a prefix: every row (the service does not page). */
  async listEntries(prefix: string, signal?: AbortSignal): Promise<ListEntry[]> {
    const res = await this.#call("list_entries", prefix, this.endpoint("list_entries", prefix), signal);
    let rows: unknown;
    try {
      rows = await res.json();
    } catch (err) {
      throw new StorageError("Failed", "the cache service's list_entries answer is not JSON", {
        backend: "harness",
        op: "list",
        object: prefix,
        cause: err,
      });
    }
    if (rows === null) return [];
    if (!Array.isArray(rows)) {
      throw new StorageError("Failed", "the cache service's list_entries answer is not a JSON array", {
        backend: "harness",
        op: "list",
        object: prefix,
      });
    }
    return rows.flatMap((row): ListEntry[] => {
      if (typeof row !== "object" || row === null) return [];
      const field = (name: string) =>
        Object.entries(row as Record<string, unknown>).find(([k]) => k.toLowerCase() === name)?.[1];
      const path = field("path");
      if (typeof path !== "string" || path === "") return [];
      const size = Number(field("size") ?? 0);
      const modified = new Date(String(field("lastmodified") ?? ""));
      return [{ path, size: Number.isFinite(size) ? size : 0, modified }];
    });
  }

  async #call(op: string, key: string, url: string, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.#o.token !== "") headers["X-Harness-Token"] = this.#o.token;
    const what = { backend: "harness", op: op === "list_entries" ? "list" : `presign ${op}`, object: key };
    try {
      return await withRetry(async ({ signal: attemptSignal }) => {
        let res: Response;
        try {
          res = await fetch(url, { headers, redirect: "manual", signal: attemptSignal });
        } catch (err) {
          throw attemptSignal.aborted ? attemptSignal.reason : safeError(err);
        }
        if (res.status === 200) return res;
        throw new HttpStatusError(
          res.status,
          "service",
          parseRetryAfter(res.headers.get("retry-after")),
          await bodyExcerpt(res),
        );
      }, {
        policy: this.#o.policy,
        retryable,
        retryAfterMs: retryAfter,
        signal,
        log: this.#o.log,
        what,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw this.#explain(err, what.op, key);
    }
  }

  /** A service failure as a typed error that names the setting to fix. */
  #explain(err: unknown, op: string, key: string): StorageError {
    const ctx = { backend: "harness", op, object: key, cause: err };
    const at = `the cache service at ${redactUrls(this.base)}`;
    if (err instanceof HttpStatusError) {
      const s = err.status;
      if (s === 401) {
        return new AuthFailedError(
          `${at} refused the token (HTTP 401): set PLUGIN_CACHE_SERVICE_BEARER_TOKEN to a valid cache service token`,
          ctx,
        );
      }
      if (s === 403) {
        return new AccessDeniedError(
          `${at} denied access (HTTP 403): check PLUGIN_CACHE_SERVICE_BEARER_TOKEN and that it belongs to ` +
            `PLUGIN_ACCOUNT_ID`,
          ctx,
        );
      }
      if (s === 404) {
        return new NotFoundError(
          op === "presign download" || op === "presign exists"
            ? `no such cache entry (${at} answered HTTP 404)`
            : `${at} answered HTTP 404 for ${op}: check PLUGIN_CACHE_SERVICE_BASE_URL`,
          ctx,
        );
      }
      if (s >= 300 && s < 400) {
        return new InvalidSettingsError(
          `${at} redirected (HTTP ${s}): set PLUGIN_CACHE_SERVICE_BASE_URL to the service's final URL`,
          ctx,
        );
      }
      if (s === 400 || s === 422) {
        return new InvalidSettingsError(
          `${at} rejected the request (HTTP ${s}${
            err.message.slice(err.message.indexOf(s.toString()) + 3)
          }): ` +
            `check PLUGIN_ACCOUNT_ID and PLUGIN_CACHE_TYPE`,
          ctx,
        );
      }
      if (s === 408 || s === 429 || s >= 500) {
        return new UnavailableError(
          `${at} kept failing (HTTP ${s}) after ${
            this.#o.policy.retries + 1
          } attempts: retry later, or check ` +
            `PLUGIN_CACHE_SERVICE_BASE_URL`,
          ctx,
        );
      }
      return new StorageError("Failed", `${at} answered HTTP ${s}`, ctx);
    }
    if (err instanceof StorageError) return err;
    if (err instanceof IdleTimeoutError) {
      return new UnavailableError(
        `${at} did not answer: ${err.message}; check PLUGIN_CACHE_SERVICE_BASE_URL or raise ` +
          `PLUGIN_BACKEND_OPERATION_TIMEOUT`,
        ctx,
      );
    }
    return new UnavailableError(
      `cannot reach ${at}: ${redactUrls(err instanceof Error ? err.message : String(err))}; check ` +
        `PLUGIN_CACHE_SERVICE_BASE_URL`,
      ctx,
    );
  }
}

/** A fetch failure without the URL's query string in its message (pre-signed URLs carry credentials). */
export function safeError(err: unknown): Error {
  if (!(err instanceof Error)) return new Error(redactUrls(String(err)));
  if (err.name === "AbortError" || err instanceof IdleTimeoutError || err instanceof StorageError) return err;
  const clean = redactUrls(err.message);
  if (clean === err.message) return err;
  const copy = err instanceof TypeError ? new TypeError(clean) : new Error(clean);
  return copy;
}
