/**
 * A test-only Microsoft Entra ID token endpoint, for the Azure backend's
 * OIDC (federated credential) and service-principal tests. It speaks the
 * real protocol the Azure SDK (MSAL) uses, over HTTPS:
 *
 * - `GET /{tenant}/v2.0/.well-known/openid-configuration`: the tenant's
 *   metadata, pointing at the token endpoint below;
 * - `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant, with
 *   either `client_assertion` (a federated token, checked against the tokens
 *   this server was told to accept) or `client_secret`.
 *
 * Accepted requests get a JWT access token with the claims Azurite checks in
 * OAuth mode (`iss` under `https://sts.windows.net/`, `aud`
 * `https://storage.azure.com`, `nbf ≤ now < exp`); it is not signed, as
 * Azurite does not verify signatures. Rejected requests get Entra's error
 * body (`invalid_client` with an `AADSTS…` code): an unknown federated token
 * (AADSTS700211), an expired one (AADSTS700024), a wrong client id
 * (AADSTS700016) or a wrong secret (AADSTS7000215).
 *
 * Nothing here is a real credential; it exists so the failure paths are
 * tested as well as the happy path.
 *
 * @module
 */

/** Options for {@link startEntra}. */
export interface EntraOptions {
  /** Leaf certificate and key (PEM) for HTTPS, e.g. from `makeTestTls()`. */
  certPem: string;
  keyPem: string;
  /** Tenant id served (default: a fixed test GUID). */
  tenantId?: string;
  /** The application (client) id that may sign in (default: a fixed test GUID). */
  clientId?: string;
  /** Federated tokens accepted as `client_assertion` (default: one fresh token from {@link fakeOidcToken}). */
  federatedTokens?: string[];
  /** Client secret accepted for the service-principal grant (default: a random one). */
  clientSecret?: string;
  /** Access token lifetime in seconds (default 3600). */
  tokenLifetime?: number;
}

/** One token request as the server saw it (for test assertions). */
export interface EntraRequest {
  grant: "assertion" | "secret" | "other";
  clientId: string;
  accepted: boolean;
  /** The AADSTS code of a rejection. */
  error?: string;
}

/** The running endpoint. */
export interface EntraServer {
  /** `https://127.0.0.1:<port>`: what `AZURE_AUTHORITY_HOST` is set to. */
  authorityHost: string;
  tenantId: string;
  clientId: string;
  /** The first accepted federated token. */
  federatedToken: string;
  clientSecret: string;
  /** Token requests received so far. */
  requests: EntraRequest[];
  /** Stops the server. */
  stop: () => Promise<void>;
}

function base64url(data: string | Uint8Array): string {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function decodeJwtPayload(token: string): Record<string, unknown> | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const bin = atob(part.replaceAll("-", "+").replaceAll("_", "/"));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return undefined;
  }
}

/** An unsigned JWT with the given claims (tests only; nobody here verifies signatures). */
export function unsignedJwt(claims: Record<string, unknown>): string {
  const header = base64url(JSON.stringify({ alg: "RS256", typ: "JWT", kid: "ci-cache-test" }));
  return `${header}.${base64url(JSON.stringify(claims))}.${
    base64url(crypto.getRandomValues(new Uint8Array(32)))
  }`;
}

/**
 * A federated token as a CI system would issue it (issuer, subject,
 * audience `api://AzureADTokenExchange`), valid for `lifetime` seconds from
 * now; a negative lifetime gives an expired token.
 *
 * @example
 * ```ts
 * const expired = fakeOidcToken({ lifetime: -60 });
 * ```
 */
export function fakeOidcToken(options: { lifetime?: number; subject?: string } = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const lifetime = options.lifetime ?? 3600;
  return unsignedJwt({
    iss: "https://app.harness.io/ng/api/oidc/account/test",
    sub: options.subject ?? `pipeline:ci-cache-test:${crypto.randomUUID()}`,
    aud: "api://AzureADTokenExchange",
    iat: Math.min(now, now + lifetime) - 60,
    nbf: Math.min(now, now + lifetime) - 60,
    exp: now + lifetime,
  });
}

function entraError(status: number, error: string, code: number, text: string): Response {
  const trace = crypto.randomUUID();
  const correlation = crypto.randomUUID();
  const timestamp = new Date().toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  return Response.json({
    error,
    error_description:
      `AADSTS${code}: ${text} Trace ID: ${trace} Correlation ID: ${correlation} Timestamp: ${timestamp}`,
    error_codes: [code],
    timestamp,
    trace_id: trace,
    correlation_id: correlation,
    error_uri: `https://login.microsoftonline.com/error?code=${code}`,
  }, { status });
}

/**
 * Starts the token endpoint on 127.0.0.1 (free port, HTTPS).
 *
 * @example
 * ```ts
 * const tls = await makeTestTls();
 * const entra = await startEntra({ certPem: tls.certPem, keyPem: tls.keyPem });
 * // AZURE_AUTHORITY_HOST=entra.authorityHost, PLUGIN_AZURE_OIDC_TOKEN=entra.federatedToken, …
 * await entra.stop();
 * ```
 */
export function startEntra(options: EntraOptions): Promise<EntraServer> {
  const tenantId = options.tenantId ?? "72f988bf-0000-4000-8000-00000000c1ca";
  const clientId = options.clientId ?? "0d5ec0de-0000-4000-8000-00000000c11e";
  const federatedTokens = options.federatedTokens ?? [fakeOidcToken()];
  const clientSecret = options.clientSecret ?? `secret-${crypto.randomUUID()}`;
  const lifetime = options.tokenLifetime ?? 3600;
  const requests: EntraRequest[] = [];
  let base = "";

  const metadata = (tenant: string) => ({
    token_endpoint: `${base}/${tenant}/oauth2/v2.0/token`,
    token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
    jwks_uri: `${base}/${tenant}/discovery/v2.0/keys`,
    response_modes_supported: ["query", "fragment", "form_post"],
    subject_types_supported: ["pairwise"],
    id_token_signing_alg_values_supported: ["RS256"],
    response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
    scopes_supported: ["openid", "profile", "email", "offline_access"],
    issuer: `${base}/${tenant}/v2.0`,
    request_uri_parameter_supported: false,
    userinfo_endpoint: `${base}/oidc/userinfo`,
    authorization_endpoint: `${base}/${tenant}/oauth2/v2.0/authorize`,
    device_authorization_endpoint: `${base}/${tenant}/oauth2/v2.0/devicecode`,
    http_logout_supported: true,
    frontchannel_logout_supported: true,
    end_session_endpoint: `${base}/${tenant}/oauth2/v2.0/logout`,
    claims_supported: ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
    tenant_region_scope: "EU",
    cloud_instance_name: "microsoftonline.com",
    cloud_graph_host_name: "graph.windows.net",
    msgraph_host: "graph.microsoft.com",
  });

  const issue = (): Response => {
    const now = Math.floor(Date.now() / 1000);
    const accessToken = unsignedJwt({
      aud: "https://storage.azure.com",
      iss: `https://sts.windows.net/${tenantId}/`,
      iat: now - 60,
      nbf: now - 60,
      exp: now + lifetime,
      appid: clientId,
      oid: crypto.randomUUID(),
      sub: crypto.randomUUID(),
      tid: tenantId,
      ver: "1.0",
    });
    return Response.json({
      token_type: "Bearer",
      expires_in: lifetime,
      ext_expires_in: lifetime,
      access_token: accessToken,
    });
  };

  const token = async (tenant: string, req: Request): Promise<Response> => {
    const form = new URLSearchParams(await req.text());
    const reqClientId = form.get("client_id") ?? "";
    const assertion = form.get("client_assertion");
    const secret = form.get("client_secret");
    const grant = assertion !== null ? "assertion" : secret !== null ? "secret" : "other";
    const reject = (status: number, code: number, text: string, error = "invalid_client") => {
      requests.push({ grant, clientId: reqClientId, accepted: false, error: `AADSTS${code}` });
      return entraError(status, error, code, text);
    };
    if (tenant !== tenantId) {
      return reject(400, 90002, `Tenant '${tenant}' not found.`, "invalid_request");
    }
    if (form.get("grant_type") !== "client_credentials") {
      return reject(400, 70003, "The app requested an unsupported grant type.", "unsupported_grant_type");
    }
    if (reqClientId !== clientId) {
      return reject(
        400,
        700016,
        `Application with identifier '${reqClientId}' was not found in the directory '${tenant}'.`,
        "unauthorized_client",
      );
    }
    if (grant === "assertion") {
      if (form.get("client_assertion_type") !== "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
        return reject(400, 50027, "Invalid client_assertion_type.", "invalid_request");
      }
      const claims = decodeJwtPayload(assertion!);
      if (claims && typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
        return reject(400, 700024, "Client assertion is not within its valid time range.");
      }
      if (!federatedTokens.includes(assertion!)) {
        const iss = typeof claims?.iss === "string" ? claims.iss : "unknown";
        const sub = typeof claims?.sub === "string" ? claims.sub : "unknown";
        return reject(
          400,
          700211,
          `No matching federated identity record found for presented assertion issuer '${iss}'. ` +
            `Please check your federated identity credential Subject, Audience and Issuer against the ` +
            `presented assertion (subject '${sub}').`,
        );
      }
    } else if (grant === "secret") {
      if (secret !== clientSecret) {
        return reject(
          401,
          7000215,
          "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        );
      }
    } else {
      return reject(
        400,
        7000216,
        "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        "invalid_request",
      );
    }
    const scope = form.get("scope") ?? "";
    if (!scope.split(" ").includes("https://storage.azure.com/.default")) {
      return reject(400, 1002012, `The provided value for scope ${scope} is not valid.`, "invalid_scope");
    }
    requests.push({ grant, clientId: reqClientId, accepted: true });
    return issue();
  };

  const handler = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname.split("/").filter((s) => s !== "");
    if (
      req.method === "GET" && path.length === 4 && path[1] === "v2.0" && path[3] === "openid-configuration"
    ) {
      return Response.json(metadata(path[0]));
    }
    if (req.method === "POST" && path.length === 4 && path[1] === "oauth2" && path[3] === "token") {
      return await token(path[0], req);
    }
    return entraError(
      404,
      "invalid_request",
      90011,
      `No route for ${req.method} ${new URL(req.url).pathname}.`,
    );
  };

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: options.certPem,
      key: options.keyPem,
      onListen: () => {},
    }, handler);
    base = `https://127.0.0.1:${server.addr.port}`;
    resolve({
      authorityHost: base,
      tenantId,
      clientId,
      federatedToken: federatedTokens[0],
      clientSecret,
      requests,
      stop: () => server.shutdown(),
    });
  });
}
