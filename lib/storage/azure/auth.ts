/**
 * Azure backend settings: which credential to use (first match wins), the
 * blob service URL and the container name.
 *
 * Authentication order (DESIGN §6, reference A§5.3):
 * 1. OIDC: a federated token from `PLUGIN_AZURE_OIDC_TOKEN`, then
 *    `PLUGIN_OIDC_TOKEN_ID`, then the file named by
 *    `AZURE_FEDERATED_TOKEN_FILE`, with tenant and client id, exchanged at
 *    Entra ID through `ClientAssertionCredential`. The token is used as
 *    given (the file is re-read on every exchange, as AKS rotates it).
 * 2. Service principal: client id, client secret and tenant id.
 * 3. Shared key: account name and account key.
 * 4. SAS token, then connection string (both also serve Azurite).
 *
 * @module
 */
import {
  AnonymousCredential,
  BlobServiceClient,
  StorageSharedKeyCredential,
} from "../../deps/azure_storage_blob.ts";
import type { StoragePipelineOptions } from "../../deps/azure_storage_blob.ts";
// @azure/identity is loaded only when an Entra credential is used: it costs ≈0.2 s of start-up CPU that shared
// key, SAS and connection-string runs do not need.
const loadIdentity = () => import("../../deps/azure_identity.ts");
import type { Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";
import { InvalidSettingsError } from "../backend.ts";
import { accountFromUrl, type AzureAuthInfo, sasInfo, serviceUrl, sharedKeyInfo } from "./target.ts";

export { type AzureAuthInfo, type AzureAuthMethod, containerName, serviceUrl } from "./target.ts";

/** A ready client plus what messages need about it. */
export interface AzureConnection {
  client: BlobServiceClient;
  auth: AzureAuthInfo;
}

const KIND = "azure";
const ctx = { backend: KIND, op: "connect" };

/**
 * Pipeline options shared by every client: the SDK's own retries are off
 * because the backend retries every call itself (with an idle timeout and
 * exponential backoff, also on 429 and stalled bodies, which the SDK's
 * policy does not cover).
 */
export const PIPELINE_OPTIONS: StoragePipelineOptions = {
  retryOptions: { maxTries: 1 },
  keepAliveOptions: { enable: true },
  userAgentOptions: { userAgentPrefix: "ci-cache" },
};

function authorityOptions(
  settings: Settings,
): { authorityHost?: string; disableInstanceDiscovery?: boolean } {
  if (settings.azureAuthorityHost === "") return {};
  let ok = false;
  try {
    ok = new URL(settings.azureAuthorityHost).protocol === "https:";
  } catch { /* reported below */ }
  if (!ok) {
    throw new InvalidSettingsError(
      `${describeSource(settings, "azureAuthorityHost")}=${
        JSON.stringify(settings.azureAuthorityHost)
      } is not ` +
        `an https URL: use e.g. https://login.microsoftonline.us for Azure Government`,
      ctx,
    );
  }
  // An overridden authority (sovereign cloud, private endpoint, tests) must not
  // make MSAL call the public cloud's instance discovery.
  return { authorityHost: settings.azureAuthorityHost, disableInstanceDiscovery: true };
}

/** Where the federated token comes from, if anywhere. */
interface TokenSource {
  source: string;
  read: () => Promise<string>;
}

async function federatedToken(settings: Settings, log: Logger): Promise<TokenSource | undefined> {
  if (settings.azureOidcToken !== "") {
    log.addSecret(settings.azureOidcToken);
    return {
      source: describeSource(settings, "azureOidcToken"),
      read: () => Promise.resolve(settings.azureOidcToken),
    };
  }
  if (settings.oidcTokenId !== "") {
    log.addSecret(settings.oidcTokenId);
    return {
      source: describeSource(settings, "oidcTokenId"),
      read: () => Promise.resolve(settings.oidcTokenId),
    };
  }
  if (settings.azureFederatedTokenFile !== "") {
    const path = settings.azureFederatedTokenFile;
    const source = `the file in ${describeSource(settings, "azureFederatedTokenFile")} (${path})`;
    const read = async () => {
      let token: string;
      try {
        token = (await Deno.readTextFile(path)).trim();
      } catch (err) {
        throw new InvalidSettingsError(
          `cannot read the federated token file ${path}: ${(err as Error).message}`,
          {
            ...ctx,
            cause: err,
          },
        );
      }
      if (token === "") throw new InvalidSettingsError(`the federated token file ${path} is empty`, ctx);
      log.addSecret(token);
      return token;
    };
    await read(); // fail early, and register the secret before anything logs
    return { source, read };
  }
  return undefined;
}

const HOW_TO_AUTHENTICATE = [
  "1. OIDC (workload identity federation): a token in PLUGIN_AZURE_OIDC_TOKEN, PLUGIN_OIDC_TOKEN_ID or the " +
  "file named by AZURE_FEDERATED_TOKEN_FILE, plus PLUGIN_AZURE_TENANT_ID and PLUGIN_AZURE_CLIENT_ID;",
  "2. service principal: PLUGIN_AZURE_CLIENT_ID, PLUGIN_AZURE_CLIENT_SECRET and PLUGIN_AZURE_TENANT_ID;",
  "3. shared key: PLUGIN_ACCOUNT_NAME and PLUGIN_ACCOUNT_KEY (or a SAS token in PLUGIN_SAS_TOKEN, or a " +
  "connection string in PLUGIN_AZURE_CONNECTION_STRING).",
].join(" ");

/**
 * Picks the credential the settings configure (first match wins), builds the
 * blob service client and registers every secret it reads with `log`.
 * Throws {@link InvalidSettingsError} when nothing usable is configured,
 * listing the three ways to authenticate.
 *
 * @example
 * ```ts
 * const { client, auth } = await connectAzure(settings, log);
 * log.info("azure backend", { auth: auth.description });
 * ```
 */
export async function connectAzure(settings: Settings, log: Logger): Promise<AzureConnection> {
  for (const s of [settings.azureClientSecret, settings.azureAccountKey, settings.azureSasToken]) {
    if (s !== "") log.addSecret(s);
  }
  if (settings.azureConnectionString !== "") log.addSecret(settings.azureConnectionString);

  const tenantId = settings.azureTenantId;
  const clientId = settings.azureClientId;
  const token = await federatedToken(settings, log);

  // 1. OIDC
  if (token && (tenantId !== "" || clientId !== "")) {
    if (tenantId === "" || clientId === "") {
      const missing = tenantId === "" ? "PLUGIN_AZURE_TENANT_ID" : "PLUGIN_AZURE_CLIENT_ID";
      throw new InvalidSettingsError(
        `an OIDC token is set (${token.source}) but ${missing} is not: OIDC needs the tenant id and the ` +
          `client id of the app registration (or managed identity) that trusts the token`,
        ctx,
      );
    }
    const url = serviceUrl(settings);
    const { ClientAssertionCredential } = await loadIdentity();
    const credential = new ClientAssertionCredential(
      tenantId,
      clientId,
      token.read,
      authorityOptions(settings),
    );
    return {
      client: new BlobServiceClient(url.url, credential, PIPELINE_OPTIONS),
      auth: {
        method: "oidc",
        description: `OIDC federated token from ${token.source} (tenant ${tenantId}, client ${clientId})`,
        accountName: url.accountName,
        serviceUrl: url.url,
        serviceUrlSource: url.source,
        secretSource: token.source,
        tenantId,
        clientId,
      },
    };
  }

  // 2. Service principal
  if (clientId !== "" && settings.azureClientSecret !== "" && tenantId !== "") {
    const url = serviceUrl(settings);
    const { ClientSecretCredential } = await loadIdentity();
    const credential = new ClientSecretCredential(
      tenantId,
      clientId,
      settings.azureClientSecret,
      authorityOptions(settings),
    );
    return {
      client: new BlobServiceClient(url.url, credential, PIPELINE_OPTIONS),
      auth: {
        method: "service-principal",
        description: `service principal (client ${clientId}, tenant ${tenantId}, secret from ` +
          `${describeSource(settings, "azureClientSecret")})`,
        accountName: url.accountName,
        serviceUrl: url.url,
        serviceUrlSource: url.source,
        secretSource: describeSource(settings, "azureClientSecret"),
        tenantId,
        clientId,
      },
    };
  }

  // 3. Shared key
  if (settings.azureAccountName !== "" && settings.azureAccountKey !== "") {
    const url = serviceUrl(settings);
    let credential: StorageSharedKeyCredential;
    try {
      credential = new StorageSharedKeyCredential(settings.azureAccountName, settings.azureAccountKey);
    } catch (err) {
      throw new InvalidSettingsError(
        `${describeSource(settings, "azureAccountKey")} is not a valid account key (it must be base64): ` +
          `copy key1 or key2 from the storage account's "Access keys" page`,
        { ...ctx, cause: err },
      );
    }
    return {
      client: new BlobServiceClient(url.url, credential, PIPELINE_OPTIONS),
      auth: sharedKeyInfo(settings, url),
    };
  }

  // 4. SAS token, then connection string
  if (settings.azureSasToken !== "" && (settings.endpoint !== "" || settings.azureAccountName !== "")) {
    const url = serviceUrl(settings);
    const sas = settings.azureSasToken.replace(/^\?/, "");
    return {
      client: new BlobServiceClient(`${url.url}?${sas}`, new AnonymousCredential(), PIPELINE_OPTIONS),
      auth: sasInfo(settings, url),
    };
  }
  if (settings.azureConnectionString !== "") {
    const source = describeSource(settings, "azureConnectionString");
    let client: BlobServiceClient;
    try {
      client = BlobServiceClient.fromConnectionString(settings.azureConnectionString, PIPELINE_OPTIONS);
    } catch (err) {
      throw new InvalidSettingsError(
        `${source} is not a valid storage connection string (${(err as Error).message.split("\n")[0]}): ` +
          `copy it from the storage account's "Access keys" page`,
        { ...ctx, cause: err },
      );
    }
    const url = new URL(client.url);
    url.search = "";
    const sas = new URL(client.url).search.slice(1);
    if (sas !== "") log.addSecret(sas);
    return {
      client,
      auth: {
        method: "connection-string",
        description: `connection string from ${source}`,
        accountName: client.accountName || accountFromUrl(url),
        serviceUrl: url.toString().replace(/\/+$/, ""),
        serviceUrlSource: source,
        secretSource: source,
      },
    };
  }

  const notes: string[] = [];
  if (token) notes.push(`an OIDC token is set (${token.source}) but tenant and client id are not`);
  if (clientId !== "" || tenantId !== "" || settings.azureClientSecret !== "") {
    const sp = [
      clientId === "" ? "PLUGIN_AZURE_CLIENT_ID" : "",
      settings.azureClientSecret === "" ? "PLUGIN_AZURE_CLIENT_SECRET" : "",
      tenantId === "" ? "PLUGIN_AZURE_TENANT_ID" : "",
    ].filter((s) => s !== "");
    notes.push(`a service principal is partly set (missing ${sp.join(", ")})`);
  }
  if (settings.azureAccountKey !== "" && settings.azureAccountName === "") {
    notes.push("an account key is set but PLUGIN_ACCOUNT_NAME is not");
  }
  if (settings.azureSasToken !== "") {
    notes.push("a SAS token is set but neither PLUGIN_ACCOUNT_NAME nor PLUGIN_ENDPOINT");
  }
  throw new InvalidSettingsError(
    `no usable Azure credentials${
      notes.length ? ` (${notes.join("; ")})` : ""
    }. Authenticate in one of three ` +
      `ways: ${HOW_TO_AUTHENTICATE}`,
    ctx,
  );
}
