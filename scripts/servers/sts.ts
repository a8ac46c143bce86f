/**
 * A test-only AWS STS on 127.0.0.1 (Deno.serve), for the s3 backend's role
 * paths: real STS cannot run here. It speaks the real query/XML protocol:
 * form-encoded `POST /` with `Action=AssumeRoleWithWebIdentity` (unsigned;
 * the OIDC token authenticates) or `Action=AssumeRole` (SigV4-signed with the
 * caller's keys, verified here), answering the real XML documents, and the
 * real error XML (`InvalidIdentityToken`, `AccessDenied`,
 * `SignatureDoesNotMatch`, …) so the failure paths are tested.
 *
 * The credentials it hands out are the keys of a Swift tempauth user plus a
 * random session token: Swift's s3api signs but does not check
 * `X-Amz-Security-Token`, so the S3 requests with them succeed.
 *
 * Run alone with `deno run -A scripts/servers/sts.ts`: one role
 * `arn:aws:iam::000000000000:role/ci-cache` for the OIDC token
 * `test-oidc-token`, handing out `test:tester` / `testing`.
 *
 * @module
 */

/** One role the STS can hand out. */
export interface StsRole {
  arn: string;
  /** Keys handed out for this role (a Swift tempauth user). */
  accessKeyId: string;
  secretAccessKey: string;
  /** OIDC tokens this role's trust policy accepts (AssumeRoleWithWebIdentity). */
  webIdentityTokens?: string[];
  /** Access key ids that may call AssumeRole on this role. */
  trustedKeys?: string[];
  /** ExternalId AssumeRole must present, if set. */
  externalId?: string;
}

/** Options for {@link startSts}. */
export interface StsOptions {
  roles: StsRole[];
  /** Secrets of the access key ids that may sign AssumeRole calls. */
  principals?: Record<string, string>;
  /** Lifetime of issued credentials in seconds (default: the requested DurationSeconds, else 3600). */
  expirySeconds?: number;
}

/** One call the STS answered, for assertions. */
export interface StsCall {
  action: string;
  roleArn: string;
  sessionName: string;
  externalId?: string;
  /** The access key id that signed the call (AssumeRole). */
  caller?: string;
  /** HTTP status answered. */
  status: number;
}

/** The running STS. */
export interface StsServer {
  /** `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** `PLUGIN_STS_ENDPOINT` for the CLI. */
  env: Record<string, string>;
  /** Every call answered, in order. */
  calls: StsCall[];
  stop: () => Promise<void>;
}

const NS = "https://sts.amazonaws.com/doc/2011-06-15/";
const enc = new TextEncoder();

function xmlEscape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function errorXml(status: number, code: string, message: string): Response {
  const body = `<ErrorResponse xmlns="${NS}">
  <Error>
    <Type>Sender</Type>
    <Code>${code}</Code>
    <Message>${xmlEscape(message)}</Message>
  </Error>
  <RequestId>${crypto.randomUUID()}</RequestId>
</ErrorResponse>
`;
  return new Response(body, { status, headers: { "content-type": "text/xml" } });
}

function credentialsXml(
  action: string,
  role: StsRole,
  session: string,
  expiry: number,
  extra = "",
): Response {
  const token = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(48))));
  const expiration = new Date(Date.now() + expiry * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  const roleName = role.arn.split("/").pop() ?? "role";
  const account = role.arn.split(":")[4] ?? "000000000000";
  const body = `<${action}Response xmlns="${NS}">
  <${action}Result>${extra}
    <AssumedRoleUser>
      <AssumedRoleId>AROATESTROLE:${xmlEscape(session)}</AssumedRoleId>
      <Arn>arn:aws:sts::${account}:assumed-role/${xmlEscape(roleName)}/${xmlEscape(session)}</Arn>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>${xmlEscape(role.accessKeyId)}</AccessKeyId>
      <SecretAccessKey>${xmlEscape(role.secretAccessKey)}</SecretAccessKey>
      <SessionToken>${token}</SessionToken>
      <Expiration>${expiration}</Expiration>
    </Credentials>
  </${action}Result>
  <ResponseMetadata>
    <RequestId>${crypto.randomUUID()}</RequestId>
  </ResponseMetadata>
</${action}Response>
`;
  return new Response(body, { headers: { "content-type": "text/xml" } });
}

async function hmac(key: Uint8Array | string, data: string): Promise<Uint8Array> {
  const raw = typeof key === "string" ? enc.encode(key) : key;
  const k = await crypto.subtle.importKey(
    "raw",
    raw as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      "sign",
    ],
  );
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, enc.encode(data)));
}

async function sha256Hex(data: string): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(data))));
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Verifies an AWS SigV4 `Authorization` header of a request whose body is
 * `body`. Returns the access key id, or an error code (`IncompleteSignature`,
 * `InvalidClientTokenId`, `SignatureDoesNotMatch`).
 */
async function verifySigV4(
  req: Request,
  body: string,
  secrets: Record<string, string>,
): Promise<{ key: string } | { error: string }> {
  const auth = req.headers.get("authorization") ?? "";
  const m = auth.match(
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]+)$/,
  );
  if (!m) return { error: "IncompleteSignature" };
  const [, key, scope, signedHeaders, signature] = m;
  const secret = secrets[key];
  if (secret === undefined) return { error: "InvalidClientTokenId" };
  const [date, region, service] = scope.split("/");
  const url = new URL(req.url);
  const headerNames = signedHeaders.split(";");
  const canonicalHeaders = headerNames.map((h) =>
    `${h}:${(req.headers.get(h) ?? "").trim().replace(/\s+/g, " ")}\n`
  )
    .join("");
  const query = [...url.searchParams].map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .sort()
    .join("&");
  const payloadHash = req.headers.get("x-amz-content-sha256") ?? await sha256Hex(body);
  const canonical = [req.method, url.pathname || "/", query, canonicalHeaders, signedHeaders, payloadHash]
    .join("\n");
  const amzDate = req.headers.get("x-amz-date") ?? "";
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256Hex(canonical)].join("\n");
  let k = await hmac(`AWS4${secret}`, date);
  k = await hmac(k, region);
  k = await hmac(k, service);
  k = await hmac(k, "aws4_request");
  const expected = hex(await hmac(k, toSign));
  return expected === signature ? { key } : { error: "SignatureDoesNotMatch" };
}

/**
 * Starts the test STS on a free port of 127.0.0.1.
 *
 * @example
 * ```ts
 * const sts = await startSts({ roles: [{ arn: "arn:aws:iam::1:role/r", accessKeyId: "test:tester",
 *   secretAccessKey: "testing", webIdentityTokens: ["tok"] }] });
 * // PLUGIN_STS_ENDPOINT=sts.endpoint, PLUGIN_ASSUME_ROLE_ARN=arn:aws:iam::1:role/r, PLUGIN_OIDC_TOKEN_ID=tok
 * await sts.stop();
 * ```
 */
export function startSts(options: StsOptions): Promise<StsServer> {
  const calls: StsCall[] = [];
  const principals: Record<string, string> = { ...options.principals };
  for (const r of options.roles) principals[r.accessKeyId] ??= r.secretAccessKey;
  const ready = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => ready.resolve(port),
  }, async (req) => {
    const body = await req.text();
    const form = new URLSearchParams(body);
    for (const [k, v] of new URL(req.url).searchParams) if (!form.has(k)) form.set(k, v);
    const action = form.get("Action") ?? "";
    const roleArn = form.get("RoleArn") ?? "";
    const sessionName = form.get("RoleSessionName") ?? "";
    const externalId = form.get("ExternalId") ?? undefined;
    const record = (status: number, caller?: string) =>
      calls.push({ action, roleArn, sessionName, externalId, caller, status });
    if (req.method !== "POST") return errorXml(400, "InvalidAction", "STS takes form-encoded POST requests");
    const role = options.roles.find((r) => r.arn === roleArn);
    const duration = Number(form.get("DurationSeconds") ?? "3600");
    const expiry = options.expirySeconds ?? duration;
    if (action === "AssumeRoleWithWebIdentity") {
      const token = form.get("WebIdentityToken") ?? "";
      const known = options.roles.some((r) => r.webIdentityTokens?.includes(token));
      if (!known) {
        record(400);
        return errorXml(
          400,
          "InvalidIdentityToken",
          "Couldn't retrieve verification key from your identity provider",
        );
      }
      if (!role || !role.webIdentityTokens?.includes(token)) {
        record(403);
        return errorXml(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity");
      }
      record(200);
      return credentialsXml(
        action,
        role,
        sessionName,
        expiry,
        "\n    <SubjectFromWebIdentityToken>ci</SubjectFromWebIdentityToken>" +
          "\n    <Audience>sts.amazonaws.com</Audience>",
      );
    }
    if (action === "AssumeRole") {
      const verified = await verifySigV4(req, body, principals);
      if ("error" in verified) {
        record(403);
        const message = verified.error === "InvalidClientTokenId"
          ? "The security token included in the request is invalid."
          : "The request signature we calculated does not match the signature you provided.";
        return errorXml(403, verified.error, message);
      }
      if (!role || !(role.trustedKeys ?? []).includes(verified.key)) {
        record(403, verified.key);
        return errorXml(
          403,
          "AccessDenied",
          `User: ${verified.key} is not authorized to perform: sts:AssumeRole`,
        );
      }
      if (role.externalId !== undefined && role.externalId !== externalId) {
        record(403, verified.key);
        return errorXml(
          403,
          "AccessDenied",
          `User: ${verified.key} is not authorized to perform: sts:AssumeRole`,
        );
      }
      record(200, verified.key);
      return credentialsXml(action, role, sessionName, expiry);
    }
    record(400);
    return errorXml(400, "InvalidAction", `Could not find operation ${action}`);
  });
  return ready.promise.then((port) => {
    const endpoint = `http://127.0.0.1:${port}`;
    return {
      endpoint,
      env: { PLUGIN_STS_ENDPOINT: endpoint },
      calls,
      stop: () => server.shutdown(),
    };
  });
}

if (import.meta.main) {
  const role = "arn:aws:iam::000000000000:role/ci-cache";
  const sts = await startSts({
    roles: [{
      arn: role,
      accessKeyId: "test:tester",
      secretAccessKey: "testing",
      webIdentityTokens: ["test-oidc-token"],
      trustedKeys: ["test:tester"],
    }],
  });
  console.log(`export PLUGIN_STS_ENDPOINT=${sts.endpoint}`);
  console.log(`export PLUGIN_ASSUME_ROLE_ARN=${role}`);
  console.log(`export PLUGIN_OIDC_TOKEN_ID=test-oidc-token`);
  console.log("# Ctrl-C stops it");
  const done = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", () => done.resolve());
  await done.promise;
  await sts.stop();
}
