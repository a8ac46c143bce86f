/**
 * Azure error handling shared by the SDK backend (`backend.ts`) and the
 * fetch-based metadata requests (`rest.ts`): the shape of an Azure error (SDK
 * or our own), which failures are worth a retry, and the typed
 * {@link StorageError} with a message that names the credential, setting or
 * role to fix. Loads no SDK code.
 *
 * @module
 */
import {
  AccessDeniedError,
  AuthFailedError,
  NotFoundError,
  StorageError,
  TooLargeError,
  UnavailableError,
} from "../backend.ts";
import { IdleTimeoutError } from "../transfer/retry.ts";
import { ShortReadError } from "../transfer/body.ts";
import type { AzureAuthInfo } from "./target.ts";

const KIND = "azure";

/** What the messages name: the credential, the container and the SAS in use. */
export interface AzureErrorContext {
  auth: AzureAuthInfo;
  container: string;
  /** A parameter of the SAS in use (`sp`, `sr`), or undefined. */
  sasParam: (name: string) => string | undefined;
}

/** What an Azure SDK error looks like, as far as the mapping below cares. */
export interface SdkError {
  name?: string;
  message?: string;
  code?: string;
  statusCode?: number;
  errorResponse?: { error?: string; errorDescription?: string };
  cause?: unknown;
}

/** A throttling or unavailable answer's `Retry-After` (SDK errors keep the response; ours carry it). */
export function retryAfterOf(err: unknown): string | undefined {
  const e = err as {
    response?: { headers?: { get?(name: string): string | undefined } };
    retryAfter?: string;
  };
  return e?.retryAfter ?? e?.response?.headers?.get?.("retry-after") ?? undefined;
}

export class AttemptTimeout extends Error {
  constructor(ms: number) {
    super(`no progress for ${ms} ms`);
    this.name = "AttemptTimeout";
  }
}

export const RETRIABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const NETWORK_CODES = [
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "ESOCKETTIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNABORTED",
  "REQUEST_SEND_ERROR",
];
const AUTH_FAILED_CODES = new Set([
  "AuthenticationFailed",
  "InvalidAuthenticationInfo",
  "NoAuthenticationInformation",
  "ExpiredToken",
]);
const DENIED_CODES = new Set([
  "AuthorizationFailure",
  "AuthorizationPermissionMismatch",
  "AuthorizationResourceTypeMismatch",
  "AuthorizationServiceMismatch",
  "AuthorizationProtocolMismatch",
  "AuthorizationSourceIPMismatch",
  "InsufficientAccountPermissions",
  "KeyBasedAuthenticationNotPermitted",
]);

/** Errors of `@azure/identity` (and MSAL underneath) when a token cannot be obtained. */
const IDENTITY_ERRORS = new Set([
  "AuthenticationError",
  "AuthenticationRequiredError",
  "CredentialUnavailableError",
  "AggregateAuthenticationError",
  "ServerError",
  "ClientAuthError",
]);

export function sdkError(err: unknown): SdkError {
  return (typeof err === "object" && err !== null ? err : { message: String(err) }) as SdkError;
}

/** First line of an SDK message (Azure appends RequestId/Time lines). */
export function firstLine(text: string | undefined): string {
  return (text ?? "").split("\n")[0].trim();
}

/** The network error code of `err` or of any of its causes. */
export function networkCode(err: unknown): string | undefined {
  let cur: unknown = err;
  for (let depth = 0; cur && depth < 5; depth++) {
    const e = sdkError(cur);
    const text = `${e.code ?? ""} ${e.message ?? ""}`;
    const code = [...NETWORK_CODES, "ENOTFOUND", "CERT_", "UNABLE_TO_VERIFY", "SELF_SIGNED", "certificate"]
      .find((c) => text.includes(c));
    if (code && code !== "REQUEST_SEND_ERROR") return code;
    cur = e.cause;
  }
  const e = sdkError(err);
  return e.code === "REQUEST_SEND_ERROR" ? "REQUEST_SEND_ERROR" : undefined;
}

export function isRetriable(err: unknown): boolean {
  if (err instanceof AttemptTimeout || err instanceof IdleTimeoutError || err instanceof ShortReadError) {
    return true;
  }
  if (err instanceof StorageError) return false;
  const e = sdkError(err);
  if (e.statusCode !== undefined && RETRIABLE_STATUS.has(e.statusCode)) return true;
  if (e.statusCode !== undefined && e.statusCode > 0) return false;
  const code = networkCode(err);
  return code !== undefined && code !== "ENOTFOUND" && !/CERT|VERIFY|SELF_SIGNED|certificate/.test(code);
}

/** What an operation does, for "may not …" messages. */
export function verbOf(op: string): string {
  return op === "get" || op === "stat"
    ? "read blobs"
    : op === "list"
    ? "list blobs"
    : op === "connect"
    ? "use the container"
    : op === "delete"
    ? "delete blobs"
    : "write blobs";
}

/** A failed ranged read as the SDK would report it: status and the service's error code. */
export async function responseError(res: Response): Promise<Error> {
  const text = await res.text().catch(() => "");
  const code = res.headers.get("x-ms-error-code") ?? /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? undefined;
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? (text.slice(0, 300) || res.statusText);
  return Object.assign(new Error(`${res.status}${code ? ` ${code}` : ""}: ${message}`), {
    statusCode: res.status,
    code,
    retryAfter: res.headers.get("retry-after") ?? undefined,
  });
}

/** A network failure, tagged with the Node-style code the retry and error mapping look for. */
export function networkFailure(err: unknown): Error {
  // A `node:http` failure (large bodies) carries its Node code already.
  if (err instanceof Error && typeof (err as { code?: unknown }).code === "string") return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = /refused/i.test(message)
    ? "ECONNREFUSED"
    : /dns|lookup|resolve/i.test(message)
    ? "ENOTFOUND"
    : /certificate|tls|ssl/i.test(message)
    ? "CERT_UNTRUSTED"
    : "ECONNRESET";
  return Object.assign(new Error(message, { cause: err }), { code });
}

/** A 404 that means the blob is missing (not the container or the account). */
export function blobMissing(cause: unknown): boolean {
  const e = sdkError(cause);
  return e.statusCode === 404 && e.code !== "ContainerNotFound" && e.code !== "ResourceNotFound";
}

/** Status, code and first message line of an error's cause, for messages. */
export function shortCause(err: unknown): string {
  const cause = err instanceof StorageError ? err.cause : err;
  const e = sdkError(cause);
  return [e.statusCode, e.code, firstLine(e.message)].filter((x) => x !== undefined && x !== "").join(" ");
}

/**
 * Turns an SDK, identity, fetch or network error into a typed error whose
 * message says what to fix.
 *
 * @example
 * ```ts
 * throw azureError("stat", "key/m", err, 5, { auth, container: "cicache", sasParam: () => undefined });
 * ```
 */
export function azureError(
  op: string,
  object: string | undefined,
  err: unknown,
  attempts: number,
  w: AzureErrorContext,
): StorageError {
  const context = { backend: KIND, op, object, cause: err };
  const e = sdkError(err);
  const auth = w.auth;
  const where = `${auth.serviceUrl}${auth.serviceUrlSource ? ` (from ${auth.serviceUrlSource})` : ""}`;

  if (err instanceof AttemptTimeout) {
    return new UnavailableError(
      `${where} did not respond (${err.message}, ${attempts} attempts): check the network or raise ` +
        `PLUGIN_BACKEND_OPERATION_TIMEOUT`,
      context,
    );
  }
  if (IDENTITY_ERRORS.has(e.name ?? "")) {
    return new AuthFailedError(identityFailure(w, e), context);
  }
  if (e.statusCode === undefined || e.statusCode === 0) {
    const code = networkCode(err);
    if (code === "ENOTFOUND") {
      const host = new URL(auth.serviceUrl).host;
      if (!auth.serviceUrlSource) {
        return new NotFoundError(
          `storage account "${auth.accountName}" not found: ${host} does not resolve. Check PLUGIN_ACCOUNT_NAME ` +
            `(and AZURE_BLOB_STORAGE_URL for sovereign clouds), and that DNS works on this machine`,
          context,
        );
      }
      return new UnavailableError(
        `cannot resolve ${host} of ${where}: check the endpoint and DNS`,
        context,
      );
    }
    if (code && /CERT|VERIFY|SELF_SIGNED|certificate/.test(code)) {
      return new UnavailableError(
        `the TLS certificate of ${where} is not trusted (${firstLine(e.message)}): for a private CA set ` +
          `NODE_EXTRA_CA_CERTS to its PEM file`,
        context,
      );
    }
    if (code) {
      return new UnavailableError(
        `cannot reach ${where} (${code}, ${attempts} attempts): check the network, proxy or firewall and the ` +
          `endpoint`,
        context,
      );
    }
    return new StorageError("Failed", firstLine(e.message) || String(err), context);
  }

  const status = e.statusCode;
  const code = e.code ?? "";
  const detail = `${status}${code ? ` ${code}` : ""}`;
  if (status === 404 || code === "ContainerNotFound" || code === "ResourceNotFound") {
    if (code === "ContainerNotFound") {
      return new NotFoundError(
        `container "${w.container}" does not exist in storage account ${auth.accountName} (${where}): ` +
          `check PLUGIN_CONTAINER`,
        context,
      );
    }
    if (code === "ResourceNotFound" && object === undefined) {
      return new NotFoundError(
        `storage account "${auth.accountName}" not found at ${where} (${detail}): check PLUGIN_ACCOUNT_NAME ` +
          `and PLUGIN_ENDPOINT`,
        context,
      );
    }
    return new NotFoundError(`no such object (${detail})`, context);
  }
  // A shared key or SAS that does not verify is AuthenticationFailed on Azure; Azurite says
  // AuthorizationFailure with Azure's AuthenticationFailed message. HEAD responses carry no code.
  const keyBased = auth.method === "shared-key" || auth.method === "sas" ||
    auth.method === "connection-string";
  const authenticationMessage = /^Server failed to authenticate the request/.test(firstLine(e.message));
  if (
    AUTH_FAILED_CODES.has(code) || status === 401 || (status === 403 && authenticationMessage) ||
    (keyBased && status === 403 && code === "")
  ) {
    return new AuthFailedError(credentialRejected(w, detail), context);
  }
  if (code === "AuthorizationFailure" || code === "AuthorizationSourceIPMismatch") {
    return new AccessDeniedError(authorizationFailure(w, op, detail), context);
  }
  if (code === "ContainerBeingDeleted") {
    return new UnavailableError(
      `container "${w.container}" of storage account ${auth.accountName} is being deleted (${detail}): ` +
        `Azure needs up to about a minute; retry later or use another PLUGIN_CONTAINER`,
      context,
    );
  }
  if (DENIED_CODES.has(code) || status === 403) {
    return new AccessDeniedError(permissionDenied(w, op, detail), context);
  }
  if (status === 413 || code === "RequestBodyTooLarge" || code === "BlockCountExceedsLimit") {
    return new TooLargeError(
      `the service refused the size (${detail}): lower PLUGIN_PART_SIZE_MB below 4000 or cache less`,
      context,
    );
  }
  if (status === 412 || code === "ConditionNotMet") {
    return new StorageError(
      "Failed",
      `the object changed while it was being read (${detail}): another save replaced it; retry the restore`,
      context,
    );
  }
  if (RETRIABLE_STATUS.has(status)) {
    return new UnavailableError(
      `${where} kept failing (${detail}: ${
        firstLine(e.message)
      }, ${attempts} attempts): the service is busy ` +
        `or down; retry later or raise AZURE_BLOB_MAX_RETRY_REQUESTS`,
      context,
    );
  }
  return new StorageError("Failed", `${detail}: ${firstLine(e.message)}`, context);
}

function identityFailure(w: AzureErrorContext, e: SdkError): string {
  const auth = w.auth;
  const text = e.errorResponse?.errorDescription ?? e.message ?? "";
  // Entra's reason: "AADSTS700211: No matching federated identity record …", without trace ids.
  const aad = /AADSTS\d+:.*?(?=\s+Trace ID:|\s+-\s+Correlation ID:|$)/s.exec(text)?.[0];
  const aadsts = /AADSTS\d+/.exec(text)?.[0];
  const reason = (aad ?? firstLine(text)).replace(/\s+/g, " ").trim();
  const who = `client ${auth.clientId} in tenant ${auth.tenantId}`;
  if (auth.method === "oidc") {
    const expired = aadsts === "AADSTS700024" || /expired|valid time range/i.test(reason);
    return `Entra ID rejected the OIDC token from ${auth.secretSource} for ${who}` +
      `${expired ? " (the token has expired)" : ""}: ${
        reason || e.name
      }. The token comes from the CI system ` +
      `(Harness sets PLUGIN_AZURE_OIDC_TOKEN / PLUGIN_OIDC_TOKEN_ID for the step): make sure it is fresh, and ` +
      `that the app registration or managed identity has a federated credential whose issuer, subject and ` +
      `audience (api://AzureADTokenExchange) match the token`;
  }
  if (auth.method === "service-principal") {
    return `Entra ID rejected the service principal ${who}: ${reason || e.name}. Check ` +
      `${auth.secretSource} (the secret's value, not its id; secrets expire) and PLUGIN_AZURE_CLIENT_ID / ` +
      `PLUGIN_AZURE_TENANT_ID`;
  }
  return `authentication failed: ${reason || e.name}`;
}

function credentialRejected(w: AzureErrorContext, detail: string): string {
  const auth = w.auth;
  switch (auth.method) {
    case "shared-key":
      return `storage account ${auth.accountName} rejected the account key (${detail}): check that ` +
        `${auth.secretSource} is a current key of this account (key1 or key2 on its "Access keys" page) and ` +
        `that PLUGIN_ACCOUNT_NAME names the same account (or the storage firewall blocks this network)`;
    case "sas":
      return `storage account ${auth.accountName} rejected the SAS token (${detail}): it is expired, revoked, ` +
        `malformed or for another account; issue a new one into ${auth.secretSource}`;
    case "connection-string":
      return `storage account ${auth.accountName} rejected the credentials of the connection string ` +
        `(${detail}): copy a current one into ${auth.secretSource}`;
    default:
      return `storage account ${auth.accountName} rejected the access token obtained for client ` +
        `${auth.clientId} (${detail}): check that the tenant ${auth.tenantId} is the storage account's tenant`;
  }
}

/**
 * 403 AuthorizationFailure: the credential was accepted, the request was not: the storage firewall
 * (virtual network / IP rules, private endpoint only), or a SAS whose permissions or scope do not cover it.
 */
function authorizationFailure(w: AzureErrorContext, op: string, detail: string): string {
  const auth = w.auth;
  const sp = w.sasParam("sp");
  const sr = w.sasParam("sr");
  const sas = sp !== undefined || sr !== undefined
    ? `; the SAS in use has permissions sp=${sp ?? "(none)"}${sr ? ` and resource sr=${sr}` : ""}: it ` +
      `needs sp=racwdl (read, add, create, write, delete, list) on this container or account (a container ` +
      `SAS, sr=c, cannot create the container: create it beforehand)`
    : "; with a SAS token, also check its permissions (sp=racwdl) and scope (sr=c or an account SAS)";
  const request = `${verbOf(op)} (container "${w.container}", ${detail})`;
  return `storage account ${auth.accountName} refused the request of this ${auth.method} credential to ` +
    `${request}. The credential itself is valid: check the ` +
    `account's firewall and virtual network rules (Networking: public access disabled, or enabled from ` +
    `selected networks and IPs that do not include this runner; private endpoint only)${sas}`;
}

function permissionDenied(w: AzureErrorContext, op: string, detail: string): string {
  const auth = w.auth;
  const what = verbOf(op);
  const target = `container "${w.container}" of storage account ${auth.accountName}`;
  if (auth.method === "sas") {
    return `the SAS token may not ${what} in ${target} (${detail}): issue it with read, add, create, write, ` +
      `delete and list permissions (sp=racwdl) for this container, or check the storage firewall`;
  }
  if (auth.method === "oidc" || auth.method === "service-principal") {
    return `client ${auth.clientId} may not ${what} in ${target} (${detail}): assign it the ` +
      `"Storage Blob Data Contributor" role on the container or the storage account (Reader roles cannot ` +
      `save or flush), or check the storage firewall`;
  }
  return `this credential may not ${what} in ${target} (${detail}): the storage account's firewall or ` +
    `settings (shared key access disabled?) refuse it`;
}
