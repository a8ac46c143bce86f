/**
 * Where an Azure backend points and how it authenticates, without the SDK:
 * the container name, the blob service URL, the credential description for
 * logs and messages, and ({@link restAuth}) the shared key or SAS the
 * fetch-based metadata requests (`rest.ts`) use.
 *
 * @module
 */
import { describeSource, type Settings } from "../../settings.ts";
import { InvalidSettingsError } from "../backend.ts";

const KIND = "azure";
const ctx = { backend: KIND, op: "connect" };

/** The authentication methods, in priority order. */
export type AzureAuthMethod = "oidc" | "service-principal" | "shared-key" | "sas" | "connection-string";

/** What error messages need to know about the credential in use (never the secret itself). */
export interface AzureAuthInfo {
  method: AzureAuthMethod;
  /** For the log line: the method and where its parts came from. */
  description: string;
  /** Storage account name (from the settings, the endpoint or the connection string). */
  accountName: string;
  /** Blob service URL without any SAS query: what messages name. */
  serviceUrl: string;
  /** The setting the service URL came from (`PLUGIN_ENDPOINT`, …), or `""` for the default. */
  serviceUrlSource: string;
  /** The setting that holds the secret (key, SAS, connection string) or the token, for messages. */
  secretSource: string;
  /** Tenant and client id for the Entra methods. */
  tenantId?: string;
  clientId?: string;
}

/**
 * The container name as the Go plugin resolves it: the setting lower-cased
 * and trimmed, else the first non-empty `/`-segment of the key template,
 * lower-cased. Throws {@link InvalidSettingsError} when there is none or it
 * is not a valid container name.
 *
 * @example
 * ```ts
 * containerName({ azureContainerName: "", cacheKey: "Builds/{{ .Commit.Branch }}" } as Settings); // "builds"
 * ```
 */
export function containerName(settings: Settings): string {
  let name = settings.azureContainerName.trim().toLowerCase();
  let from = describeSource(settings, "azureContainerName");
  if (name === "") {
    name = (settings.cacheKey.split("/").find((s) => s.trim() !== "") ?? "").trim().toLowerCase();
    from = `the first segment of ${describeSource(settings, "cacheKey")} (fallback when no container is set)`;
  }
  if (name === "") {
    throw new InvalidSettingsError(
      `azure container name is required: set ${describeSource(settings, "azureContainerName")}`,
      ctx,
    );
  }
  if (!/^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(name)) {
    throw new InvalidSettingsError(
      `container name ${JSON.stringify(name)} from ${from} is not a valid Azure container name ` +
        `(3–63 characters: lower-case letters, digits and single hyphens, starting and ending with a letter ` +
        `or digit): set ${describeSource(settings, "azureContainerName")}`,
      ctx,
    );
  }
  return name;
}

/** The account name a blob URL names: Azurite-style path (`/account`) or the first host label. */
export function accountFromUrl(url: URL): string {
  const isIp = /^[\d.]+$|^\[/.test(url.hostname) || url.hostname === "localhost";
  const first = url.pathname.split("/").find((s) => s !== "");
  return isIp && first ? first : url.hostname.split(".")[0];
}

/** The blob service URL: `settings.endpoint` when set, else `https://<account>.<azureBlobStorageUrl>`. */
export function serviceUrl(settings: Settings): { url: string; source: string; accountName: string } {
  if (settings.endpoint !== "") {
    let url: URL;
    try {
      url = new URL(settings.endpoint);
    } catch {
      url = new URL("invalid:");
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new InvalidSettingsError(
        `${describeSource(settings, "endpoint")}=${
          JSON.stringify(settings.endpoint)
        } is not an http(s) URL: ` +
          `give the full blob service URL, e.g. https://myaccount.blob.core.windows.net or ` +
          `http://127.0.0.1:10000/devstoreaccount1 for Azurite`,
        ctx,
      );
    }
    url.search = "";
    const text = url.toString().replace(/\/+$/, "");
    return {
      url: text,
      source: describeSource(settings, "endpoint"),
      accountName: settings.azureAccountName || accountFromUrl(url),
    };
  }
  if (settings.azureAccountName === "") {
    throw new InvalidSettingsError(
      "no storage account: set PLUGIN_ACCOUNT_NAME (or AZURE_ACCOUNT_NAME), or PLUGIN_ENDPOINT with the full " +
        "blob service URL",
      ctx,
    );
  }
  const suffix = (settings.azureBlobStorageUrl || "blob.core.windows.net").replace(/^https?:\/\//, "")
    .replace(/\/+$/, "");
  return {
    url: `https://${settings.azureAccountName}.${suffix}`,
    source: "",
    accountName: settings.azureAccountName,
  };
}

/**
 * What messages and the log line say about a shared-key credential.
 *
 * @example
 * ```ts
 * const info = sharedKeyInfo(settings, serviceUrl(settings));
 * ```
 */
export function sharedKeyInfo(settings: Settings, url: ReturnType<typeof serviceUrl>): AzureAuthInfo {
  return {
    method: "shared-key",
    description: `shared key of account ${settings.azureAccountName} (key from ` +
      `${describeSource(settings, "azureAccountKey")})`,
    accountName: url.accountName,
    serviceUrl: url.url,
    serviceUrlSource: url.source,
    secretSource: describeSource(settings, "azureAccountKey"),
  };
}

/**
 * What messages and the log line say about a SAS token credential.
 *
 * @example
 * ```ts
 * const info = sasInfo(settings, serviceUrl(settings));
 * ```
 */
export function sasInfo(settings: Settings, url: ReturnType<typeof serviceUrl>): AzureAuthInfo {
  return {
    method: "sas",
    description: `SAS token from ${describeSource(settings, "azureSasToken")}`,
    accountName: url.accountName,
    serviceUrl: url.url,
    serviceUrlSource: url.source,
    secretSource: describeSource(settings, "azureSasToken"),
  };
}

/** The shared key or SAS the fetch-based requests sign with, and what messages say about it. */
export interface RestAuth {
  auth: AzureAuthInfo;
  credential: { kind: "shared-key"; accountName: string; accountKey: string } | { kind: "sas"; sas: string };
}

/**
 * The credential the fetch path can use: a shared key or a SAS token, when
 * those are what {@link connectAzure} would choose (no Entra setting at
 * all); undefined otherwise (Entra credentials, connection strings, nothing
 * usable: the SDK path handles them, with their messages).
 *
 * @example
 * ```ts
 * const rest = restAuth(settings); // undefined: use the SDK
 * ```
 */
export function restAuth(settings: Settings): RestAuth | undefined {
  const entra = [
    settings.azureOidcToken,
    settings.oidcTokenId,
    settings.azureFederatedTokenFile,
    settings.azureClientId,
    settings.azureTenantId,
    settings.azureClientSecret,
  ].some((v) => v !== "");
  if (entra) return undefined;
  if (settings.azureAccountName !== "" && settings.azureAccountKey !== "") {
    try {
      atob(settings.azureAccountKey);
    } catch {
      return undefined; // the SDK path refuses it with its message
    }
    const url = serviceUrl(settings);
    return {
      auth: sharedKeyInfo(settings, url),
      credential: {
        kind: "shared-key",
        accountName: settings.azureAccountName,
        accountKey: settings.azureAccountKey,
      },
    };
  }
  if (settings.azureSasToken !== "" && (settings.endpoint !== "" || settings.azureAccountName !== "")) {
    const url = serviceUrl(settings);
    return {
      auth: sasInfo(settings, url),
      credential: { kind: "sas", sas: settings.azureSasToken.replace(/^\?/, "") },
    };
  }
  return undefined;
}
