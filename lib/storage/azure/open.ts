/**
 * Opens the azure backend from the settings, loading `@azure/storage-blob`
 * only when the credential needs it.
 *
 * With a shared key or a SAS token (the common CI cases without Entra)
 * every request goes over `fetch`: the container check, `stat` and `list`
 * in `rest.ts`, the transfers in `fetch_backend.ts`, so neither a restore
 * miss nor any save or restore loads the SDK (about 0.2 s of CPU; large
 * bodies go over `node:http`: `../transfer/send_body.ts`).
 * Entra credentials (which load `@azure/identity` anyway) and connection
 * strings take the SDK backend (`backend.ts`).
 *
 * @module
 */
import { type Backend, InvalidSettingsError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";
import { DEFAULT_RETRY_POLICY } from "../transfer/retry.ts";
import { AzureRest } from "./rest.ts";
import { type AzureAuthInfo, containerName, restAuth } from "./target.ts";
import type { AzureAccessTier } from "./blocks.ts";
import { FetchAzureBackend } from "./fetch_backend.ts";

const MiB = 1024 * 1024;

/**
 * Logs the one "azure backend" line: method, credential source, endpoint,
 * container (never a secret).
 *
 * @example
 * ```ts
 * announceAzure(auth, "cicache", log);
 * ```
 */
export function announceAzure(auth: AzureAuthInfo, container: string, log: Logger): void {
  log.info("azure backend", {
    auth: auth.method,
    credential: auth.description,
    endpoint: auth.serviceUrl,
    container,
  });
}

/**
 * Creates the azure backend from the settings: picks the credential (first
 * match wins, see `auth.ts`), resolves the endpoint and container, logs
 * which method is used (never the secret), and creates the container when
 * missing. With a shared key or SAS the start-up needs no SDK.
 * `tuning.listPageSize` (tests) sets the fetch path's list page size.
 *
 * @example
 * ```ts
 * const backend = await createAzureBackend(settings, log);
 * for await (const o of backend.list("key/")) console.log(o.name);
 * ```
 */
export async function createAzureBackend(
  settings: Settings,
  log: Logger,
  tuning: { listPageSize?: number } = {},
): Promise<Backend> {
  const container = containerName(settings);
  for (const s of [settings.azureClientSecret, settings.azureAccountKey, settings.azureSasToken]) {
    if (s !== "") log.addSecret(s);
  }
  if (settings.azureConnectionString !== "") log.addSecret(settings.azureConnectionString);
  if (settings.partSizeMb > 4000) {
    throw new InvalidSettingsError(
      `${
        describeSource(settings, "partSizeMb")
      }=${settings.partSizeMb} exceeds Azure's block size limit: use 1–4000`,
      { backend: "azure", op: "connect" },
    );
  }
  const rest = restAuth(settings);
  if (rest === undefined) {
    const { sdkAzureBackend } = await import("./backend.ts");
    return await sdkAzureBackend(settings, log, { ensure: true, announce: true });
  }
  announceAzure(rest.auth, container, log);
  const backend = new FetchAzureBackend({
    rest: new AzureRest({
      serviceUrl: rest.auth.serviceUrl,
      credential: rest.credential,
      context: {
        auth: rest.auth,
        container,
        sasParam: (name) =>
          rest.credential.kind === "sas"
            ? new URLSearchParams(rest.credential.sas).get(name) ?? undefined
            : undefined,
      },
      policy: {
        ...DEFAULT_RETRY_POLICY,
        retries: Math.max(0, settings.azureBlobMaxRetryRequests ?? 4),
        idleMs: settings.backendOperationTimeout,
      },
      listPageSize: tuning.listPageSize,
      log,
    }),
    partSize: settings.partSizeMb * MiB,
    maxObjectSize: settings.multipartMaxUploadSizeMb * MiB,
    concurrency: settings.transferConcurrency,
    accessTier: settings.azureAccessTier as AzureAccessTier | "",
    log,
  });
  await backend.rest.ensureContainer();
  return backend;
}
