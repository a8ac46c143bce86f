/**
 * Opens the azure backend from the settings, loading `@azure/storage-blob`
 * only when a transfer needs it.
 *
 * With a shared key or a SAS token (the common CI cases without Entra) the
 * container check, `stat` and `list` go through `rest.ts` (`fetch`, Shared
 * Key signing with WebCrypto), so a restore miss, a lookup or a skipped save
 * never load the SDK (about 0.2 s of CPU before the first request); `get`,
 * `put` and `delete` load it on first use, and a `stat` that finds the blob
 * starts loading it in the background. Entra credentials (which load
 * `@azure/identity` anyway) and connection strings take the SDK path for
 * everything, as before.
 *
 * @module
 */
import {
  type Backend,
  InvalidSettingsError,
  type ObjectInfo,
  type ObjectMeta,
  type TransferOptions,
} from "../backend.ts";
import type { Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";
import { DEFAULT_RETRY_POLICY } from "../transfer/retry.ts";
import { AzureRest } from "./rest.ts";
import { type AzureAuthInfo, containerName, restAuth } from "./target.ts";
import type { AzureBackend } from "./backend.ts";

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
  const backend = new LazyAzureBackend(
    settings,
    log,
    rest.auth,
    container,
    new AzureRest({
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
  );
  await backend.rest.ensureContainer();
  return backend;
}

/** The azure backend with the metadata requests over `fetch` and the transfers on the SDK, loaded on first use. */
class LazyAzureBackend implements Backend {
  readonly kind = "azure";
  /** The credential in use (as the SDK backend's `auth`). */
  readonly auth: AzureAuthInfo;
  readonly container: string;
  readonly rest: AzureRest;
  readonly #settings: Settings;
  readonly #log: Logger;
  #sdk?: Promise<AzureBackend>;

  constructor(settings: Settings, log: Logger, auth: AzureAuthInfo, container: string, rest: AzureRest) {
    this.#settings = settings;
    this.#log = log;
    this.auth = auth;
    this.container = container;
    this.rest = rest;
  }

  /** The SDK backend (loaded once; the container was checked already). */
  sdk(): Promise<AzureBackend> {
    this.#sdk ??= import("./backend.ts").then(({ sdkAzureBackend }) =>
      sdkAzureBackend(this.#settings, this.#log, { ensure: false, announce: false })
    );
    return this.#sdk;
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    const info = await this.rest.stat(name);
    if (info !== null) this.sdk().catch(() => {}); // a download follows: load the SDK meanwhile
    return info;
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.rest.list(prefix);
  }

  async get(name: string, options?: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    return await (await this.sdk()).get(name, options);
  }

  async put(name: string, body: ReadableStream<Uint8Array>, meta: ObjectMeta, options?: TransferOptions) {
    return await (await this.sdk()).put(name, body, meta, options);
  }

  async delete(name: string): Promise<void> {
    return await (await this.sdk()).delete(name);
  }

  async close(): Promise<void> {
    if (this.#sdk === undefined) return;
    const sdk = await this.#sdk.catch(() => undefined);
    await sdk?.close();
  }
}
