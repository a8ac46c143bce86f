/**
 * Making sure the container exists, shared by the SDK backend and the
 * fetch-based metadata path: create it (waiting while Azure still deletes a
 * container of that name), and when that is refused, probe by listing one
 * blob, so an identity that may not create containers but may use an
 * existing one still works (as the Go plugin).
 *
 * @module
 */
import { AuthFailedError, NotFoundError, StorageError, UnavailableError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import { backoffDelay, sleep as waitFor } from "../transfer/retry.ts";
import { type AzureErrorContext, sdkError, shortCause } from "./errors.ts";

const KIND = "azure";

/** The two requests and what messages need. */
export interface ContainerOps {
  /** Create Container; throws the mapped error (its cause the service's answer). */
  create: () => Promise<unknown>;
  /** List one blob; throws the mapped error. */
  probe: () => Promise<unknown>;
  context: AzureErrorContext;
  /** The operation timeout: how long to wait for a container being deleted (≤ 0: 180 s). */
  timeoutMs: number;
  log?: Logger;
}

/**
 * Creates the container when it is missing. An identity that may not
 * create containers but may list an existing one still works (as the Go
 * plugin: try to create, on any refusal probe by listing one blob). A
 * container-scoped SAS (`sr=c`, the usual least-privilege token) can never
 * create one, so it goes straight to the probe. A container that is being
 * deleted (409 `ContainerBeingDeleted`; Azure takes up to about a minute)
 * is waited for with backoff, up to the operation timeout.
 *
 * @example
 * ```ts
 * await ensureContainer({ create, probe, context, timeoutMs: 180_000, log });
 * ```
 */
export async function ensureContainer(o: ContainerOps): Promise<void> {
  let createError: unknown;
  if (o.context.sasParam("sr") === "c") {
    createError = "a container SAS (sr=c) cannot create containers";
  } else {
    createError = await createContainer(o);
    if (createError === undefined) return;
    // Unreachable or refused outright: probing would only repeat the same wait.
    if (createError instanceof UnavailableError || createError instanceof AuthFailedError) {
      throw createError;
    }
  }
  try {
    await o.probe();
    o.log?.debug("not creating the container: it exists and can be listed", {
      container: o.context.container,
      create_error: createError instanceof Error ? createError.message : String(createError),
    });
  } catch (probeError) {
    // Listing says why: a missing container (then the create error tells why it could
    // not be made), a refused credential, an unknown account, an unreachable endpoint.
    if (probeError instanceof NotFoundError && sdkError(probeError.cause).code === "ContainerNotFound") {
      throw new NotFoundError(
        `container "${o.context.container}" does not exist in storage account ${o.context.auth.accountName} ` +
          `(${o.context.auth.serviceUrl}) and could not be created (${
            typeof createError === "string" ? createError : shortCause(createError)
          }): create it, ` +
          `or give the identity a role that may create containers (Storage Blob Data Contributor on the ` +
          `account), or check PLUGIN_CONTAINER`,
        { backend: KIND, op: "connect", cause: createError },
      );
    }
    throw probeError;
  }
}

/**
 * Creates the container: `undefined` when it was created or already exists, else the (mapped) refusal.
 * While the container is being deleted, waits with backoff up to the operation timeout.
 */

/**
 * Creates the container: `undefined` when it was created or already exists, else the (mapped) refusal.
 * While the container is being deleted, waits with backoff up to the operation timeout.
 */
async function createContainer(o: ContainerOps): Promise<unknown> {
  const limitMs = o.timeoutMs > 0 ? o.timeoutMs : 180_000;
  const started = Date.now();
  for (let wait = 0;; wait++) {
    try {
      await o.create();
      o.log?.info("created the azure container", { container: o.context.container });
      return undefined;
    } catch (err) {
      const cause = sdkError(err instanceof StorageError ? err.cause : err);
      if (cause.code === "ContainerBeingDeleted") {
        const elapsed = Date.now() - started;
        const delay = Math.min(
          backoffDelay(wait, { retries: 0, baseMs: 1000, capMs: 10_000, idleMs: 0 }),
          limitMs - elapsed,
        );
        if (delay <= 0) {
          return new UnavailableError(
            `container "${o.context.container}" of storage account ${o.context.auth.accountName} is being deleted ` +
              `(409 ContainerBeingDeleted) and was still being deleted after ${
                Math.round(elapsed / 1000)
              } s: ` +
              `Azure needs up to about a minute to delete a container; retry later, raise ` +
              `PLUGIN_BACKEND_OPERATION_TIMEOUT, or use another PLUGIN_CONTAINER`,
            { backend: KIND, op: "connect", cause: err },
          );
        }
        o.log?.info("the azure container is being deleted; waiting to create it again", {
          container: o.context.container,
          wait_ms: Math.round(delay),
        });
        await waitFor(delay);
        continue;
      }
      if (cause.code === "ContainerAlreadyExists" || (cause.statusCode === 409 && !cause.code)) {
        return undefined;
      }
      return err;
    }
  }
}
