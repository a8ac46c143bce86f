/**
 * A test-only stand-in for Google's token services, which cannot run here, speaking their real JSON
 * protocols on 127.0.0.1:
 *
 * - STS token exchange, `POST /v1/token` (form or JSON body, `grant_type`
 *   `urn:ietf:params:oauth:grant-type:token-exchange`): accepts only the OIDC tokens it was told about, for
 *   the expected audience, and answers `{access_token, issued_token_type, token_type, expires_in}`; anything
 *   else gets Google's `{"error":"invalid_grant","error_description":…}`.
 * - IAM credentials, `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` with
 *   `Authorization: Bearer <federated token>`: answers `{accessToken, expireTime}`; unknown bearer tokens get
 *   401 UNAUTHENTICATED, other service accounts 403 PERMISSION_DENIED (Google's error JSON).
 * - OAuth2 for service account keys, `POST /token` (`grant_type` jwt-bearer): verifies the RS256 assertion
 *   against the key pair it generated ({@link GoogleSts.jsonKey} hands out the matching key file) and
 *   answers `{access_token, expires_in, token_type}`.
 *
 * Everything it saw is in {@link GoogleSts.seen}, so tests can assert on what reached it.
 *
 * Run alone: `deno run -A scripts/servers/google_sts.ts` prints its endpoints and a JSON key, then waits.
 *
 * @module
 */

/** Options for {@link startGoogleSts}. */
export interface GoogleStsOptions {
  /** OIDC tokens the STS accepts (anything else is refused with invalid_grant). */
  oidcTokens?: string[];
  /** The workload identity provider audience it expects (any, when unset). */
  audience?: string;
  /** Service accounts that federated tokens may impersonate. */
  serviceAccounts?: string[];
  /** Lifetime of issued tokens in seconds (short lifetimes exercise refresh). */
  lifetimeSeconds?: number;
}

/** One request the fake answered. */
export interface SeenRequest {
  path: string;
  /** Parsed form/JSON body fields (strings only). */
  body: Record<string, unknown>;
  authorization: string;
  status: number;
}

/** A running fake. */
export interface GoogleSts {
  /** Base URL, e.g. `http://127.0.0.1:1234` (STS and IAM credentials live under it). */
  url: string;
  /** Requests seen, oldest first. */
  seen: SeenRequest[];
  /** Access tokens issued by IAM credentials and the OAuth endpoint (what storage should receive). */
  issued: string[];
  /** A service account key file (JSON text) whose token_uri points here and whose key this fake verifies. */
  jsonKey(email?: string): string;
  stop(): Promise<void>;
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });

function b64urlDecode(s: string): Uint8Array<ArrayBuffer> {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function pem(der: ArrayBuffer): string {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN PRIVATE KEY-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END PRIVATE KEY-----\n`;
}

/**
 * Starts the fake on a free port of 127.0.0.1.
 *
 * @example
 * ```ts
 * const sts = await startGoogleSts({ oidcTokens: ["ci-token"], serviceAccounts: ["sa@p.iam.gserviceaccount.com"] });
 * // settings.stsEndpoint = settings.iamEndpoint = sts.url
 * await sts.stop();
 * ```
 */
export async function startGoogleSts(options: GoogleStsOptions = {}): Promise<GoogleSts> {
  const lifetime = options.lifetimeSeconds ?? 3600;
  const federated = new Set<string>();
  const issued: string[] = [];
  const seen: SeenRequest[] = [];
  const keyPair = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
  const privatePem = pem(await crypto.subtle.exportKey("pkcs8", keyPair.privateKey));
  const keyId = crypto.randomUUID().replaceAll("-", "");
  const token = (kind: string) => `ya29.${kind}-${crypto.randomUUID()}`;
  let url = "";

  async function readBody(req: Request): Promise<Record<string, unknown>> {
    const text = await req.text();
    if ((req.headers.get("content-type") ?? "").includes("json")) {
      try {
        return JSON.parse(text);
      } catch {
        return {};
      }
    }
    return Object.fromEntries(new URLSearchParams(text));
  }

  async function verifyAssertion(assertion: string): Promise<string | undefined> {
    const [h, c, s] = assertion.split(".");
    if (!h || !c || !s) return "Invalid JWT: malformed.";
    const ok = await crypto.subtle.verify(
      "RSASSA-PKCS1-v1_5",
      keyPair.publicKey,
      b64urlDecode(s),
      new TextEncoder().encode(`${h}.${c}`),
    );
    if (!ok) return "Invalid JWT Signature.";
    const claims = JSON.parse(new TextDecoder().decode(b64urlDecode(c)));
    const now = Date.now() / 1000;
    if (claims.aud !== `${url}/token`) return "Invalid JWT: Failed audience check.";
    if (!(claims.iat <= now + 60 && now < claims.exp)) {
      return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.";
    }
    return undefined;
  }

  async function handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    const body = req.method === "POST" ? await readBody(req) : {};
    const authorization = req.headers.get("authorization") ?? "";
    const answer = (r: Response) => {
      seen.push({ path, body, authorization, status: r.status });
      return r;
    };
    if (req.method === "POST" && path === "/v1/token") {
      if (body.grant_type !== "urn:ietf:params:oauth:grant-type:token-exchange") {
        return answer(
          json(400, { error: "invalid_request", error_description: 'Invalid value for "grant_type".' }),
        );
      }
      if (options.audience !== undefined && body.audience !== options.audience) {
        return answer(json(400, {
          error: "invalid_grant",
          error_description:
            `The audience in ID Token [${body.audience}] does not match the expected audience.`,
        }));
      }
      if (!options.oidcTokens?.includes(String(body.subject_token))) {
        return answer(json(400, {
          error: "invalid_grant",
          error_description: 'Invalid value for "subject_token". The token could not be verified.',
        }));
      }
      const t = token("fed");
      federated.add(t);
      return answer(json(200, {
        access_token: t,
        issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
        token_type: "Bearer",
        expires_in: lifetime,
      }));
    }
    const iam = /^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/.exec(path);
    if (req.method === "POST" && iam) {
      const email = decodeURIComponent(iam[1]);
      if (!federated.has(authorization.replace(/^Bearer /, ""))) {
        return answer(json(401, {
          error: {
            code: 401,
            message:
              "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            status: "UNAUTHENTICATED",
          },
        }));
      }
      if (!(options.serviceAccounts ?? []).includes(email)) {
        return answer(json(403, {
          error: {
            code: 403,
            message:
              "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            status: "PERMISSION_DENIED",
          },
        }));
      }
      const t = token("sa");
      issued.push(t);
      return answer(
        json(200, { accessToken: t, expireTime: new Date(Date.now() + lifetime * 1000).toISOString() }),
      );
    }
    if (req.method === "POST" && path === "/token") {
      if (body.grant_type !== "urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return answer(
          json(400, { error: "unsupported_grant_type", error_description: "Invalid grant_type." }),
        );
      }
      const problem = await verifyAssertion(String(body.assertion ?? ""));
      if (problem) return answer(json(400, { error: "invalid_grant", error_description: problem }));
      const t = token("key");
      issued.push(t);
      return answer(json(200, { access_token: t, expires_in: lifetime, token_type: "Bearer" }));
    }
    return answer(json(404, { error: { code: 404, message: "Not Found", status: "NOT_FOUND" } }));
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  url = `http://127.0.0.1:${server.addr.port}`;
  return {
    url,
    seen,
    issued,
    jsonKey: (email = "ci-cache-test@example-project.iam.gserviceaccount.com") =>
      JSON.stringify({
        type: "service_account",
        project_id: "example-project",
        private_key_id: keyId,
        private_key: privatePem,
        client_email: email,
        client_id: "1234567890",
        auth_uri: "https://accounts.google.com/o/oauth2/auth",
        token_uri: `${url}/token`,
      }),
    stop: async () => {
      await server.shutdown();
    },
  };
}

if (import.meta.main) {
  const sts = await startGoogleSts({
    oidcTokens: ["test-oidc-token"],
    serviceAccounts: ["ci-cache-test@example-project.iam.gserviceaccount.com"],
  });
  console.log(
    `PLUGIN_STS_ENDPOINT=${sts.url}\nPLUGIN_IAM_ENDPOINT=${sts.url}\nPLUGIN_OIDC_TOKEN_ID=test-oidc-token`,
  );
  console.log(`PLUGIN_JSON_KEY='${sts.jsonKey()}'`);
  console.log("Ctrl-C to stop");
}
