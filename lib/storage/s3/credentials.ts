/**
 * AWS credentials for the s3 backend, chosen in the Go plugin's order
 * (reference A§5.2), with two deliberate improvements: web identity
 * credentials are refreshed before they expire (the Go plugin turns them into
 * static keys that die after an hour), and `settings.stsEndpoint` is honoured
 * (the Go plugin ignores it).
 *
 * Order, first match wins:
 * 1. static keys (`accessKey` + `secretKey`, optional `sessionToken`);
 * 2. web identity: `assumeRoleArn` + `oidcTokenId` → STS AssumeRoleWithWebIdentity;
 * 3. assume role: `assumeRoleArn` (+ `externalId`) over the SDK default chain;
 * 4. the SDK default chain (env, shared config/profile, IRSA token file,
 *    container and instance metadata).
 *
 * Then, when `userRoleArn` is set, that role is assumed with the credentials
 * built so far (role chaining, optional `userRoleExternalId`).
 *
 * @module
 */
import type { fromNodeProviderChain } from "../../deps/aws_credential_providers.ts";
import type { Logger } from "../../log.ts";
import { InvalidSettingsError } from "../backend.ts";
import type { Settings } from "../../settings.ts";

/** A credentials provider as the S3 client takes it. */
export type AwsCredentialIdentityProvider = ReturnType<typeof fromNodeProviderChain>;
/** Access key id, secret, optional session token and expiration. */
export type AwsCredentialIdentity = Awaited<ReturnType<AwsCredentialIdentityProvider>>;

type Providers = typeof import("../../deps/aws_credential_providers.ts");
let providers: Promise<Providers> | undefined;

/**
 * A provider built from the SDK's credential providers, which are loaded on
 * its first call: static keys never load them (they pull in the STS client
 * and the SDK core, a large part of start-up).
 */
function lazyProvider(make: (p: Providers) => AwsCredentialIdentityProvider): AwsCredentialIdentityProvider {
  let inner: Promise<AwsCredentialIdentityProvider> | undefined;
  return async (props) => {
    inner ??= (providers ??= import("../../deps/aws_credential_providers.ts")).then(make);
    return (await inner)(props);
  };
}

/** Lifetime requested for assumed-role sessions (the SDK refreshes them before expiry). */
export const ROLE_SESSION_SECONDS = 3600;

/** The chosen credentials and how to describe them in logs. */
export interface S3Credentials {
  /** Human-readable authentication method (never a secret), e.g. `static keys`. */
  method: string;
  /** The provider the S3 client calls (it caches and refreshes by expiration). */
  provider: AwsCredentialIdentityProvider;
  /** Which settings to check when the credentials are refused. */
  hint: string;
}

/** The subset of settings the credential choice reads. */
export type CredentialSettings =
  & Pick<
    Settings,
    | "accessKey"
    | "secretKey"
    | "sessionToken"
    | "assumeRoleArn"
    | "assumeRoleSessionName"
    | "externalId"
    | "oidcTokenId"
    | "userRoleArn"
    | "userRoleExternalId"
    | "stsEndpoint"
  >
  & Partial<Pick<Settings, "source">>;

/** The setting a value came from (`--access-key`, `AWS_ACCESS_KEY_ID`, …), or its plugin variable. */
function sourceOf(s: CredentialSettings, key: "accessKey" | "secretKey"): string {
  const from = s.source?.[key];
  if (from && from !== "default") return from;
  return key === "accessKey" ? "PLUGIN_ACCESS_KEY" : "PLUGIN_SECRET_KEY";
}

/**
 * Refuses half a static key pair, naming the half that is missing and where
 * the other half came from. The Go plugin silently fell back to the default
 * credential chain, which then failed far from the cause.
 */
function checkKeyPair(s: CredentialSettings): void {
  if (s.accessKey && !s.secretKey) {
    throw new InvalidSettingsError(
      `the access key is set (${
        sourceOf(s, "accessKey")
      }) but the secret key is not: set PLUGIN_SECRET_KEY ` +
        "(or --secret-key, AWS_SECRET_ACCESS_KEY), or unset the access key to use a role or the default " +
        "credential chain",
      { backend: "s3", op: "connect" },
    );
  }
  if (s.secretKey && !s.accessKey) {
    throw new InvalidSettingsError(
      `the secret key is set (${
        sourceOf(s, "secretKey")
      }) but the access key is not: set PLUGIN_ACCESS_KEY ` +
        "(or --access-key, AWS_ACCESS_KEY_ID), or unset the secret key to use a role or the default " +
        "credential chain",
      { backend: "s3", op: "connect" },
    );
  }
}

/**
 * Normalises an endpoint setting: a scheme-less value gets `https://`, as in
 * the Go plugin; a trailing slash is dropped.
 *
 * @example
 * ```ts
 * normalizeEndpoint("minio.example.com:9000"); // "https://minio.example.com:9000"
 * ```
 */
export function normalizeEndpoint(endpoint: string): string {
  const trimmed = endpoint.trim().replace(/\/+$/, "");
  if (trimmed === "") return "";
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `https://${trimmed}`;
}

/**
 * Chooses the credentials for the s3 backend from the settings (half a key
 * pair is an {@link InvalidSettingsError} naming the missing half), registering
 * every secret (given or derived from STS) with the logger for redaction.
 * Nothing is fetched yet: the first request resolves the provider, and the
 * S3 client refreshes temporary credentials five minutes before they expire.
 *
 * @example
 * ```ts
 * const creds = chooseS3Credentials(settings, log, "us-east-1");
 * log.info("s3 backend", { auth: creds.method });
 * const client = new S3Client({ region: "us-east-1", credentials: creds.provider });
 * ```
 */
export function chooseS3Credentials(s: CredentialSettings, log: Logger, region: string): S3Credentials {
  checkKeyPair(s);
  for (const secret of [s.secretKey, s.sessionToken, s.oidcTokenId]) if (secret) log.addSecret(secret);
  const stsEndpoint = s.stsEndpoint ? normalizeEndpoint(s.stsEndpoint) : undefined;
  const clientConfig = { region, ...(stsEndpoint ? { endpoint: stsEndpoint } : {}) };
  const sessionName = s.assumeRoleSessionName || "drone-cache";
  let method: string;
  let hint: string;
  let provider: AwsCredentialIdentityProvider;

  if (s.accessKey && s.secretKey) {
    const identity: AwsCredentialIdentity = {
      accessKeyId: s.accessKey,
      secretAccessKey: s.secretKey,
      ...(s.sessionToken ? { sessionToken: s.sessionToken } : {}),
    };
    provider = () => Promise.resolve(identity);
    method = s.sessionToken ? "static keys with session token" : "static keys";
    hint = "check PLUGIN_ACCESS_KEY / PLUGIN_SECRET_KEY" + (s.sessionToken ? " / PLUGIN_SESSION_TOKEN" : "");
    if (s.assumeRoleArn) {
      log.warn("s3: static keys are set, so PLUGIN_ASSUME_ROLE_ARN is ignored (as in the Go plugin)");
    }
  } else if (s.assumeRoleArn && s.oidcTokenId) {
    provider = lazyProvider(({ fromWebToken }) =>
      fromWebToken({
        roleArn: s.assumeRoleArn,
        roleSessionName: sessionName,
        webIdentityToken: s.oidcTokenId,
        durationSeconds: ROLE_SESSION_SECONDS,
        clientConfig,
      })
    );
    method = `web identity (OIDC token, role ${s.assumeRoleArn})`;
    hint = `check PLUGIN_OIDC_TOKEN_ID and that the trust policy of ${s.assumeRoleArn} accepts this token ` +
      "(issuer, audience, subject)";
  } else if (s.assumeRoleArn) {
    provider = lazyProvider(({ fromNodeProviderChain, fromTemporaryCredentials }) =>
      fromTemporaryCredentials({
        params: {
          RoleArn: s.assumeRoleArn,
          RoleSessionName: sessionName,
          DurationSeconds: ROLE_SESSION_SECONDS,
          ...(s.externalId ? { ExternalId: s.externalId } : {}),
        },
        masterCredentials: fromNodeProviderChain({ clientConfig }),
        clientConfig,
      })
    );
    method = `assume role ${s.assumeRoleArn} over the default credential chain`;
    hint = `check that the base credentials may assume ${s.assumeRoleArn}` +
      (s.externalId ? " with PLUGIN_EXTERNAL_ID" : "");
  } else {
    log.warn(
      "s3: no access key, secret key or role is set: using the AWS SDK default credential chain " +
        "(AWS_* env vars, profile, IRSA token file, container or instance metadata)",
    );
    provider = lazyProvider(({ fromNodeProviderChain }) => fromNodeProviderChain({ clientConfig }));
    method = "default credential chain";
    hint =
      "set PLUGIN_ACCESS_KEY and PLUGIN_SECRET_KEY, or PLUGIN_ASSUME_ROLE_ARN with PLUGIN_OIDC_TOKEN_ID, " +
      "or give the runner an instance/pod role";
  }

  if (s.userRoleArn) {
    const master = redacting(provider, log);
    provider = lazyProvider(({ fromTemporaryCredentials }) =>
      fromTemporaryCredentials({
        params: {
          RoleArn: s.userRoleArn,
          RoleSessionName: `${sessionName}-user-role`,
          DurationSeconds: ROLE_SESSION_SECONDS,
          ...(s.userRoleExternalId ? { ExternalId: s.userRoleExternalId } : {}),
        },
        masterCredentials: master,
        clientConfig,
      })
    );
    method += `, then user role ${s.userRoleArn}`;
    hint += `; and check that this identity may assume ${s.userRoleArn}` +
      (s.userRoleExternalId ? " with PLUGIN_USER_ROLE_EXTERNAL_ID" : "");
  }
  return { method, provider: redacting(provider, log), hint };
}

const CREDENTIAL_ERROR = Symbol("cicache.credentialError");

/**
 * True when `err` came from obtaining credentials (an STS call, the default
 * chain) rather than from the storage request itself.
 *
 * @example
 * ```ts
 * if (isCredentialError(err)) console.log("STS or the credential chain failed");
 * ```
 */
export function isCredentialError(err: unknown): boolean {
  return typeof err === "object" && err !== null &&
    (err as Record<symbol, unknown>)[CREDENTIAL_ERROR] === true;
}

/**
 * Wraps a provider so every secret it hands out is registered for log
 * redaction, and its failures are marked (see {@link isCredentialError}).
 */
function redacting(provider: AwsCredentialIdentityProvider, log: Logger): AwsCredentialIdentityProvider {
  return async (props) => {
    let identity: AwsCredentialIdentity;
    try {
      identity = await provider(props);
    } catch (err) {
      if (typeof err === "object" && err !== null) (err as Record<symbol, unknown>)[CREDENTIAL_ERROR] = true;
      throw err;
    }
    log.addSecret(identity.secretAccessKey);
    if (identity.sessionToken) log.addSecret(identity.sessionToken);
    return identity;
  };
}
