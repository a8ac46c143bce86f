/**
 * Credentials for the GCS backend, chosen in the Go plugin's order (reference A§5.4): workload identity
 * federation with the CI system's OIDC token, API key, service account JSON key, application default
 * credentials.
 *
 * Differences from the Go plugin, on purpose:
 * - No silent fall-through to unauthenticated access: when nothing works, the error says what was tried.
 *   Only a plain-HTTP custom endpoint (an emulator) with no credentials configured runs unauthenticated,
 *   and the log says so.
 * - Federated tokens are refreshed before they expire ({@link RefreshingToken}), so transfers longer than
 *   the token lifetime keep working.
 * - A service account key is exchanged at the key's own `token_uri` (JWT bearer grant, RFC 7523).
 *
 * @module
 */
// Loaded only for application default credentials (metadata server, gcloud user credentials): every other
// method gets its tokens itself, so a GCS run never loads the library (a large part of start-up CPU).
import type { GoogleAuth } from "../../deps/google_auth_library.ts";
import { AccessDeniedError, AuthFailedError, InvalidSettingsError, UnavailableError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";

/** The OAuth scope every GCS credential asks for (full control: predefined ACLs need it, as in the Go plugin). */
export const GCS_SCOPE = "https://www.googleapis.com/auth/devstorage.full_control";
const CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_STS = "https://sts.googleapis.com";
const DEFAULT_IAM = "https://iamcredentials.googleapis.com";

/** An access token and when it expires (epoch milliseconds). */
export interface AccessToken {
  token: string;
  expiresAt: number;
}

/** How the backend authenticates: headers for its requests. */
export interface GcsAuth {
  /** For the info log line: which method (never a secret). */
  readonly method: string;
  /** Request headers that authenticate one request (`Authorization` or `x-goog-api-key`), or none. */
  headers(): Promise<Record<string, string>>;
  /** Whether requests carry credentials (false only for a plain-HTTP emulator without any). */
  readonly sdk: { authenticated: boolean };
}

/**
 * Caches an access token and fetches a new one shortly before it expires; concurrent callers share one
 * refresh. This is what keeps long transfers working with short-lived federated tokens.
 *
 * @example
 * ```ts
 * const source = new RefreshingToken(async () => ({ token: "t", expiresAt: Date.now() + 3600_000 }));
 * const token = await source.get();
 * ```
 */
export class RefreshingToken {
  #current?: AccessToken;
  #pending?: Promise<AccessToken>;

  constructor(
    private readonly fetchToken: () => Promise<AccessToken>,
    private readonly refreshMarginMs = 5 * 60_000,
  ) {}

  /** A token valid for at least the refresh margin (or the newest one, for very short lifetimes). */
  async get(): Promise<AccessToken> {
    const cur = this.#current;
    if (cur && Date.now() < cur.expiresAt - this.refreshMarginMs) return cur;
    this.#pending ??= this.fetchToken().then((t) => {
      this.#current = t;
      return t;
    }).finally(() => {
      this.#pending = undefined;
    });
    return await this.#pending;
  }
}

/** Options for {@link resolveGcsAuth}; tests set the environment and timeouts. */
export interface ResolveAuthOptions {
  /** Environment for `GOOGLE_APPLICATION_CREDENTIALS` (default: the process environment). */
  env?: Record<string, string | undefined>;
  /** Per-request timeout for token endpoints (ms). */
  timeoutMs?: number;
}

/**
 * Picks the credentials the settings configure, in the Go plugin's order, and checks the ones that can be
 * checked without storage (federation exchanges its token here, so a refused OIDC token fails early).
 *
 * @example
 * ```ts
 * const auth = await resolveGcsAuth(settings, log);
 * log.info("gcs backend", { auth: auth.method });
 * ```
 */
export async function resolveGcsAuth(
  settings: Settings,
  log: Logger,
  options: ResolveAuthOptions = {},
): Promise<GcsAuth> {
  const env = options.env ?? Deno.env.toObject();
  const timeoutMs = options.timeoutMs || 60_000;
  const wif = {
    oidcTokenId: settings.oidcTokenId,
    oidcProjectNumber: settings.oidcProjectNumber,
    oidcPoolId: settings.oidcPoolId,
    oidcProviderId: settings.oidcProviderId,
    oidcServiceAccountEmail: settings.oidcServiceAccountEmail,
  };
  const federationKeys = Object.keys(wif) as (keyof typeof wif)[];
  const set = federationKeys.filter((k) => wif[k] !== "");
  const federationParts = set.filter((k) => k !== "oidcTokenId");
  if (federationParts.length > 0 && set.length < federationKeys.length) {
    const missing = federationKeys.filter((k) => wif[k] === "").map((k) => describeSource(settings, k));
    throw new InvalidSettingsError(
      `workload identity federation is half configured: set ${missing.join(", ")} as well ` +
        `(or remove the other federation settings to use another credential)`,
      { backend: "gcs", op: "connect" },
    );
  }
  if (set.length === federationKeys.length) {
    log.addSecret(settings.oidcTokenId);
    const source = federatedTokenSource({
      oidcToken: settings.oidcTokenId,
      projectNumber: settings.oidcProjectNumber,
      poolId: settings.oidcPoolId,
      providerId: settings.oidcProviderId,
      serviceAccount: settings.oidcServiceAccountEmail,
      stsEndpoint: settings.stsEndpoint || DEFAULT_STS,
      iamEndpoint: settings.iamEndpoint || DEFAULT_IAM,
      timeoutMs,
      log,
    });
    await source.get();
    return tokenAuth(`workload identity federation as ${settings.oidcServiceAccountEmail}`, source);
  }
  if (settings.gcsApiKey !== "") {
    const key = settings.gcsApiKey;
    log.addSecret(key);
    return {
      method: "API key",
      headers: () => Promise.resolve({ "x-goog-api-key": key }),
      sdk: { authenticated: true },
    };
  }
  if (settings.gcsJsonKey !== "") {
    const key = await loadJsonKey(settings.gcsJsonKey, describeSource(settings, "gcsJsonKey"), log);
    return jsonKeyAuth(
      key,
      `JSON key of ${key.client_email}`,
      describeSource(settings, "gcsJsonKey"),
      timeoutMs,
      log,
    );
  }
  if (isPlainHttp(settings.endpoint)) {
    return {
      method: "none (plain-HTTP emulator endpoint)",
      headers: () => Promise.resolve({}),
      sdk: noSdkAuth,
    };
  }
  return await applicationDefault(env, timeoutMs, log);
}

const noSdkAuth = { authenticated: false };

function isPlainHttp(endpoint: string): boolean {
  return /^http:\/\//i.test(endpoint.trim());
}

/**
 * Bearer-token authentication from a token source, for the backend's requests.
 *
 * @example
 * ```ts
 * const auth = tokenAuth("test token", new RefreshingToken(async () => ({ token: "t", expiresAt: Date.now() + 3600_000 })));
 * ```
 */
export function tokenAuth(method: string, source: RefreshingToken): GcsAuth {
  return {
    method,
    headers: async () => ({ authorization: `Bearer ${(await source.get()).token}` }),
    sdk: { authenticated: true },
  };
}

// ── workload identity federation ───────────────────────────────────────────

/** Settings for {@link federatedTokenSource}. */
export interface FederationOptions {
  oidcToken: string;
  projectNumber: string;
  poolId: string;
  providerId: string;
  serviceAccount: string;
  /** Google STS base URL (`https://sts.googleapis.com`). */
  stsEndpoint: string;
  /** IAM credentials base URL (`https://iamcredentials.googleapis.com`). */
  iamEndpoint: string;
  timeoutMs: number;
  log: Logger;
}

/**
 * A token source for workload identity federation: the CI system's OIDC token is exchanged at Google STS for
 * a federated token, which then impersonates the service account (IAM credentials `generateAccessToken`).
 * Both steps run again before the service account token expires.
 *
 * @example
 * ```ts
 * const source = federatedTokenSource({ oidcToken, projectNumber: "123", poolId: "ci", providerId: "harness",
 *   serviceAccount: "cache@p.iam.gserviceaccount.com", stsEndpoint: "https://sts.googleapis.com",
 *   iamEndpoint: "https://iamcredentials.googleapis.com", timeoutMs: 60_000, log });
 * ```
 */
export function federatedTokenSource(o: FederationOptions): RefreshingToken {
  const audience =
    `//iam.googleapis.com/projects/${o.projectNumber}/locations/global/workloadIdentityPools/${o.poolId}/providers/${o.providerId}`;
  const sts = baseUrl(o.stsEndpoint, /\/v1\/token$/);
  const iam = baseUrl(o.iamEndpoint, /\/v1$/);
  return new RefreshingToken(async () => {
    const stsUrl = `${sts}/v1/token`;
    const form = new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      audience,
      scope: CLOUD_PLATFORM_SCOPE,
      requested_token_type: "urn:ietf:params:oauth:token-type:access_token",
      subject_token: o.oidcToken,
      subject_token_type: "urn:ietf:params:oauth:token-type:id_token",
    });
    const exchanged = await postJson(stsUrl, form, {}, o.timeoutMs, "STS token exchange");
    if (!exchanged.ok) {
      const body = exchanged.body as { error?: string; error_description?: string };
      throw new AuthFailedError(
        `Google STS (${stsUrl}) refused the OIDC token (PLUGIN_OIDC_TOKEN_ID): ${
          body.error_description ?? body.error ?? `HTTP ${exchanged.status}`
        }. The token comes from the CI system (the Harness/Drone OIDC token of this step): check that it is ` +
          `fresh and that workload identity provider ${audience} trusts its issuer and audience`,
        { backend: "gcs", op: "connect" },
      );
    }
    const fed = exchanged.body as { access_token?: string };
    if (typeof fed.access_token !== "string") {
      throw new AuthFailedError(`Google STS (${stsUrl}) answered without an access_token`, {
        backend: "gcs",
        op: "connect",
      });
    }
    o.log.addSecret(fed.access_token);
    const iamUrl = `${iam}/v1/projects/-/serviceAccounts/${
      encodeURIComponent(o.serviceAccount)
    }:generateAccessToken`;
    const sa = await postJson(
      iamUrl,
      JSON.stringify({ scope: [CLOUD_PLATFORM_SCOPE] }),
      { authorization: `Bearer ${fed.access_token}`, "content-type": "application/json" },
      o.timeoutMs,
      "service account impersonation",
    );
    const body = sa.body as { accessToken?: string; expireTime?: string; error?: { message?: string } };
    if (!sa.ok) {
      const said = body.error?.message ?? `HTTP ${sa.status}`;
      const ctx = { backend: "gcs", op: "connect" };
      if (sa.status === 403) {
        throw new AccessDeniedError(
          `the federated identity may not impersonate ${o.serviceAccount} (IAM credentials said: ${said}): ` +
            `grant the workload identity pool's principal roles/iam.workloadIdentityUser on that service account`,
          ctx,
        );
      }
      throw new AuthFailedError(
        `impersonating ${o.serviceAccount} at ${iamUrl} failed (${said}): check PLUGIN_SERVICE_ACCOUNT_EMAIL`,
        ctx,
      );
    }
    if (typeof body.accessToken !== "string") {
      throw new AuthFailedError(`IAM credentials (${iamUrl}) answered without an accessToken`, {
        backend: "gcs",
        op: "connect",
      });
    }
    o.log.addSecret(body.accessToken);
    const expires = body.expireTime ? Date.parse(body.expireTime) : NaN;
    return { token: body.accessToken, expiresAt: Number.isNaN(expires) ? Date.now() + 3600_000 : expires };
  });
}

function baseUrl(url: string, suffix: RegExp): string {
  return url.trim().replace(/\/+$/, "").replace(suffix, "");
}

async function postJson(
  url: string,
  body: string | URLSearchParams,
  headers: Record<string, string>,
  timeoutMs: number,
  what: string,
): Promise<{ ok: boolean; status: number; body: unknown }> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    try {
      const res = await fetch(url, { method: "POST", body, headers, signal: AbortSignal.timeout(timeoutMs) });
      const text = await res.text();
      if (res.status >= 500) {
        lastError = new Error(`HTTP ${res.status}`);
        continue;
      }
      let parsed: unknown = {};
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { error: text.slice(0, 200) };
      }
      return { ok: res.ok, status: res.status, body: parsed };
    } catch (err) {
      lastError = err;
    }
  }
  throw new UnavailableError(
    `${what} at ${new URL(url).origin} failed: ${
      lastError instanceof Error ? lastError.message : String(lastError)
    }. Check the network, or the endpoint (PLUGIN_STS_ENDPOINT / PLUGIN_IAM_ENDPOINT) if it is overridden`,
    { backend: "gcs", op: "connect", cause: lastError },
  );
}

// ── service account JSON key ───────────────────────────────────────────────

/** The fields of a service account key that ci-cache uses. */
export interface ServiceAccountKey {
  type: string;
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
}

/**
 * Reads a service account key from the setting's value: the JSON content itself, or a path to the file.
 * Errors name the setting and what is wrong, never the key's content.
 *
 * @example
 * ```ts
 * const key = await loadJsonKey(settings.gcsJsonKey, "PLUGIN_JSON_KEY", log);
 * ```
 */
export async function loadJsonKey(value: string, from: string, log: Logger): Promise<ServiceAccountKey> {
  const ctx = { backend: "gcs", op: "connect" };
  let text = value.trim();
  if (!text.startsWith("{")) {
    try {
      text = await Deno.readTextFile(text);
    } catch (err) {
      throw new InvalidSettingsError(
        `${from} is neither a JSON key (it does not start with "{") nor a readable key file ` +
          `(${
            err instanceof Error ? err.name : "error"
          }): paste the service account key JSON, or give its path`,
        { ...ctx, cause: err },
      );
    }
  }
  log.addSecret(text);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new InvalidSettingsError(
      `${from} is not valid JSON (truncated or mangled when it was stored as a secret?): ` +
        `paste the whole service account key file created with "gcloud iam service-accounts keys create"`,
      ctx,
    );
  }
  const key = parsed as Partial<ServiceAccountKey>;
  if (typeof parsed !== "object" || parsed === null || key.type !== "service_account") {
    throw new InvalidSettingsError(
      `${from} is JSON but not a service account key (its "type" is ${
        JSON.stringify(typeof key?.type === "string" ? key.type : null)
      }, expected "service_account"): use a key created with "gcloud iam service-accounts keys create"`,
      ctx,
    );
  }
  const missing = (["client_email", "private_key"] as const).filter((f) =>
    typeof key[f] !== "string" || !key[f]
  );
  if (missing.length > 0) {
    throw new InvalidSettingsError(`${from} lacks ${missing.join(" and ")}: use the complete key file`, ctx);
  }
  log.addSecret(key.private_key!);
  return key as ServiceAccountKey;
}

/** Authenticates with a service account key: signed JWT exchanged for an access token (refreshed). */
async function jsonKeyAuth(
  key: ServiceAccountKey,
  method: string,
  from: string,
  timeoutMs: number,
  log: Logger,
): Promise<GcsAuth> {
  const ctx = { backend: "gcs", op: "connect" };
  let signingKey: CryptoKey;
  try {
    const der = pemToDer(key.private_key);
    signingKey = await crypto.subtle.importKey(
      "pkcs8",
      der,
      { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
      false,
      ["sign"],
    );
  } catch (err) {
    throw new InvalidSettingsError(
      `the private_key of the JSON key in ${from} (${key.client_email}) is not a PEM PKCS#8 RSA key: ` +
        `use the key file exactly as Google created it`,
      { ...ctx, cause: err },
    );
  }
  const tokenUri = key.token_uri || "https://oauth2.googleapis.com/token";
  const source = new RefreshingToken(async () => {
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: "RS256", typ: "JWT", ...(key.private_key_id ? { kid: key.private_key_id } : {}) };
    const claims = { iss: key.client_email, scope: GCS_SCOPE, aud: tokenUri, iat: now, exp: now + 3600 };
    const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = await crypto.subtle.sign("RSASSA-PKCS1-v1_5", signingKey, new TextEncoder().encode(unsigned));
    const assertion = `${unsigned}.${b64url(new Uint8Array(sig))}`;
    const form = new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer",
      assertion,
    });
    const res = await postJson(tokenUri, form, {}, timeoutMs, "service account token request");
    const body = res.body as {
      access_token?: string;
      expires_in?: number;
      error?: string;
      error_description?: string;
    };
    if (!res.ok || typeof body.access_token !== "string") {
      throw new AuthFailedError(
        `Google refused the JSON key of ${key.client_email} at ${tokenUri}: ${
          body.error_description ?? body.error ?? `HTTP ${res.status}`
        }. The key may be deleted or disabled: create a new one and update ${from}`,
        ctx,
      );
    }
    log.addSecret(body.access_token);
    return { token: body.access_token, expiresAt: Date.now() + (body.expires_in ?? 3600) * 1000 };
  });
  await source.get();
  return tokenAuth(method, source);
}

function pemToDer(pem: string): ArrayBuffer {
  const m = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(pem);
  if (!m) throw new Error("no PKCS#8 PEM block");
  const bin = atob(m[1].replace(/\s+/g, ""));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

function b64url(data: string | Uint8Array): string {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// ── application default credentials ─────────────────────────────────────────

async function applicationDefault(
  env: Record<string, string | undefined>,
  timeoutMs: number,
  log: Logger,
): Promise<GcsAuth> {
  const file = env.GOOGLE_APPLICATION_CREDENTIALS ?? "";
  if (file !== "") {
    let type = "";
    try {
      type = JSON.parse(await Deno.readTextFile(file)).type ?? "";
    } catch (err) {
      throw new InvalidSettingsError(
        `GOOGLE_APPLICATION_CREDENTIALS=${file} is not a readable JSON credentials file: fix or unset it`,
        { backend: "gcs", op: "connect", cause: err },
      );
    }
    if (type === "service_account") {
      const key = await loadJsonKey(file, "GOOGLE_APPLICATION_CREDENTIALS", log);
      const method = `application default credentials (key of ${key.client_email})`;
      return jsonKeyAuth(key, method, "GOOGLE_APPLICATION_CREDENTIALS", timeoutMs, log);
    }
  }
  let auth: GoogleAuth;
  try {
    const { GoogleAuth } = await import("../../deps/google_auth_library.ts");
    auth = new GoogleAuth({ scopes: [GCS_SCOPE] });
    const token = await auth.getAccessToken();
    if (!token) throw new Error("no access token");
    log.addSecret(token);
  } catch (err) {
    throw new AuthFailedError(
      "no GCS credentials: tried workload identity federation (PLUGIN_OIDC_TOKEN_ID with PLUGIN_PROJECT_NUMBER, " +
        "PLUGIN_POOL_ID, PLUGIN_PROVIDER_ID, PLUGIN_SERVICE_ACCOUNT_EMAIL: not set), API key (PLUGIN_API_KEY: " +
        "not set), JSON key (PLUGIN_JSON_KEY: not set) and application default credentials (" +
        `${err instanceof Error ? err.message.split("\n")[0] : String(err)}). ` +
        "Set one of them; ci-cache never falls back to unauthenticated access",
      { backend: "gcs", op: "connect", cause: err },
    );
  }
  return {
    method: "application default credentials",
    headers: async () => Object.fromEntries((await auth.getRequestHeaders()).entries()),
    sdk: { authenticated: true },
  };
}
