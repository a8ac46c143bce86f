/**
 * Redaction of credentials in text: the one place where error messages and
 * log lines lose what must never be printed.
 *
 * Two kinds of secrets end up in error text. Signed URLs: a network failure
 * in `fetch` reports "error sending request for url (<url>)", and that URL
 * may carry an Azure SAS (`sig=`), an S3 presigned query
 * (`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`) or a GCS
 * signed URL (`X-Goog-Signature`). And registered values: account keys,
 * tokens and passwords the credential code knows about.
 *
 * {@link redact} masks the value of every query parameter of every URL in
 * the text except a short list of harmless ones (expiry, version,
 * permissions, resource type), every known signing parameter even outside a
 * URL (a bare SAS token), bearer tokens, and every registered secret.
 *
 * @module
 */

/** Query parameters whose values are not secret and help a reader (expiry, version, permissions). */
const KEEP = new Set([
  "se",
  "st",
  "sv",
  "sp",
  "sr",
  "spr",
  "srt",
  "ss",
  "comp",
  "restype",
  "blockid",
  "prefix",
  "uploadid",
  "partnumber",
  "x-amz-expires",
  "x-amz-date",
  "x-amz-algorithm",
  "x-amz-signedheaders",
  "x-goog-expires",
  "x-goog-date",
  "x-goog-algorithm",
  "x-goog-signedheaders",
  "alt",
  "uploadtype",
  "name",
]);

/** Parameters that sign or authorize a request: masked wherever they appear, also outside a URL. */
const SIGNING = [
  "sig",
  "signature",
  "x-amz-signature",
  "x-amz-credential",
  "x-amz-security-token",
  "x-goog-signature",
  "x-goog-credential",
  "googleaccessid",
  "awsaccesskeyid",
  "access_token",
  "skoid",
  "sktid",
  "saoid",
  "suoid",
];

const MASK = "***";
const URL_PATTERN = /\b(https?|wss?):\/\/[^\s"'<>`)]+/gi;
const SIGNING_PATTERN = new RegExp(`(^|[?&;\\s"'(])(${SIGNING.join("|")})=([^&\\s"'<>)]+)`, "gi");
const BEARER_PATTERN = /\b(Bearer|SharedKey|SharedKeyLite)\s+[A-Za-z0-9._~+/:=-]{8,}/g;

const secrets: string[] = [];

/**
 * Registers a secret value (key, token, password) to be masked by
 * {@link redact} everywhere, for the rest of the process. Values shorter
 * than 4 characters are ignored (they would mask ordinary words).
 *
 * @example
 * ```ts
 * registerSecret(settings.secretKey);
 * redact(`failed with ${settings.secretKey}`); // "failed with ***"
 * ```
 */
export function registerSecret(value: string): void {
  // Secrets also travel URL-encoded (a SAS in a query, a key in a connection string).
  for (const v of new Set([value, encodeURIComponent(value)])) {
    if (v.length >= 4 && !secrets.includes(v)) secrets.push(v);
  }
  // Longest first, so a secret that contains another is masked whole.
  secrets.sort((a, b) => b.length - a.length);
}

/** Masks the query values of one URL, keeping the harmless ones. */
function redactUrl(url: string): string {
  const q = url.indexOf("?");
  if (q < 0) return url;
  const hash = url.indexOf("#", q);
  const query = url.slice(q + 1, hash < 0 ? undefined : hash);
  const masked = query.split("&").map((pair) => {
    const eq = pair.indexOf("=");
    if (eq < 0) return pair;
    const name = pair.slice(0, eq);
    let decoded = name;
    try {
      decoded = decodeURIComponent(name);
    } catch { /* keep the raw name */ }
    return KEEP.has(decoded.toLowerCase()) ? pair : `${name}=${MASK}`;
  }).join("&");
  return url.slice(0, q + 1) + masked + (hash < 0 ? "" : url.slice(hash));
}

/**
 * `text` without credentials: URL query values (except expiry, version,
 * permissions and the like), signing parameters anywhere, bearer/shared-key
 * authorization values and every {@link registerSecret registered} secret
 * become `***`. Secrets of a logger (`extra`) are masked too.
 *
 * @example
 * ```ts
 * redact("error sending request for url (https://a.blob.core.windows.net/c/b?sv=2025-01-05&sig=abc)");
 * // "error sending request for url (https://a.blob.core.windows.net/c/b?sv=2025-01-05&sig=***)"
 * ```
 */
export function redact(text: string, extra: readonly string[] = []): string {
  let out = text;
  for (const s of extra) if (s.length >= 4) out = out.split(s).join(MASK);
  for (const s of secrets) out = out.split(s).join(MASK);
  out = out.replace(URL_PATTERN, redactUrl);
  out = out.replace(SIGNING_PATTERN, (_m, lead: string, name: string) => `${lead}${name}=${MASK}`);
  out = out.replace(BEARER_PATTERN, (_m, scheme: string) => `${scheme} ${MASK}`);
  return out;
}
