/**
 * AWS Signature Version 4 for plain `fetch` requests (header signing), with
 * WebCrypto: the s3 backend's metadata requests (HEAD, list) are signed here
 * so a restore miss never loads the AWS SDK. Canonical request as the SDK's
 * S3 signer builds it: the path is used as given (already URI-encoded, not
 * encoded twice), the query sorted and RFC 3986-encoded, the payload hash
 * sent in `x-amz-content-sha256`. `tests/sigv4_test.ts` checks it against
 * the SDK's signer on the same inputs, and the s3 tests against Swift.
 *
 * @module
 */

/** Credentials that sign a request. */
export interface SigV4Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** One request to sign. */
export interface SigV4Request {
  method: string;
  /** The full URL; its path must already be URI-encoded (as {@link encodeS3Key} does). */
  url: URL;
  /** Extra headers to send and sign (lower or mixed case). */
  headers?: Record<string, string>;
  /** Hex SHA-256 of the body (default: of the empty body). */
  payloadHash?: string;
}

/** SHA-256 of the empty body, hex. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const encoder = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function hmac(key: BufferSource, data: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, encoder.encode(data));
}

/**
 * RFC 3986 percent-encoding (what SigV4 wants): `encodeURIComponent` plus
 * `!'()*`.
 *
 * @example
 * ```ts
 * rfc3986("a b!"); // "a%20b%21"
 * ```
 */
export function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

/**
 * An object key as a URL path: every segment RFC 3986-encoded, slashes kept.
 *
 * @example
 * ```ts
 * encodeS3Key("key/node modules"); // "key/node%20modules"
 * ```
 */
export function encodeS3Key(key: string): string {
  return key.split("/").map(rfc3986).join("/");
}

/** `20250101T000000Z` for a date. */
function amzDate(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/**
 * Signs `req` for `service` in `region` at `date`, returning every header to
 * send: the given ones plus `host`, `x-amz-date`, `x-amz-content-sha256`,
 * `x-amz-security-token` (with a session token) and `authorization`.
 *
 * @example
 * ```ts
 * const headers = await signV4({ method: "HEAD", url: new URL("http://127.0.0.1:8080/bucket/key") },
 *   { accessKeyId: "AKID", secretAccessKey: "secret" }, "us-east-1");
 * await fetch("http://127.0.0.1:8080/bucket/key", { method: "HEAD", headers });
 * ```
 */
export async function signV4(
  req: SigV4Request,
  creds: SigV4Credentials,
  region: string,
  service = "s3",
  date: Date = new Date(),
): Promise<Record<string, string>> {
  const stamp = amzDate(date);
  const day = stamp.slice(0, 8);
  const payloadHash = req.payloadHash ?? EMPTY_SHA256;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v;
  headers["host"] = req.url.host;
  headers["x-amz-date"] = stamp;
  headers["x-amz-content-sha256"] = payloadHash;
  if (creds.sessionToken) headers["x-amz-security-token"] = creds.sessionToken;

  const names = Object.keys(headers).sort();
  const canonicalHeaders = names.map((n) => `${n}:${headers[n].trim().replace(/\s+/g, " ")}\n`).join("");
  const signedHeaders = names.join(";");
  const query = [...req.url.searchParams.entries()]
    .map(([k, v]) => [rfc3986(k), rfc3986(v)])
    .sort(([a, av], [b, bv]) => a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0)
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonicalRequest = [
    req.method.toUpperCase(),
    req.url.pathname || "/",
    query,
    canonicalHeaders,
    signedHeaders,
    payloadHash,
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = [
    "AWS4-HMAC-SHA256",
    stamp,
    scope,
    hex(await crypto.subtle.digest("SHA-256", encoder.encode(canonicalRequest))),
  ].join("\n");
  let key = await hmac(encoder.encode(`AWS4${creds.secretAccessKey}`), day);
  for (const part of [region, service, "aws4_request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, stringToSign));
  headers["authorization"] =
    `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, ` +
    `Signature=${signature}`;
  return headers;
}
