/**
 * The storage backend interface every backend implements, and the typed errors
 * they throw.
 *
 * A backend stores opaque objects under slash-separated names. It knows
 * nothing about archives, keys or mounts: {@link Backend} is deliberately
 * small (restic-style) so that a new backend is done when the shared
 * conformance suite (`tests/backend_conformance.ts`) passes against its real
 * server.
 *
 * @module
 */

/** Metadata stored with an object (lower-case keys with underscores). */
export type ObjectMeta = Record<string, string>;

/** What {@link Backend.stat} and {@link Backend.list} report about an object. */
export interface ObjectInfo {
  /** Full object name, as passed to {@link Backend.put}. */
  name: string;
  /** Size in bytes. */
  size: number;
  /** Last modification (upload completion) time. */
  modified: Date;
  /** Metadata set at upload; `{}` where the backend has none or `list` does not return it. */
  meta: ObjectMeta;
}

/** Options common to the transfer calls. */
export interface TransferOptions {
  /** Aborts the transfer; the backend must then clean up (no partial object). */
  signal?: AbortSignal;
  /**
   * `put` only: called with each chunk of the body once the backend no longer needs it, so the producer may
   * reuse its memory. Optional for backends: one that keeps references (e.g. to assemble parts) must not call it.
   */
  release?: (chunk: Uint8Array) => void;
}

/**
 * One storage backend.
 *
 * Contract (checked by the conformance suite):
 * - `put` consumes the stream to its end; the object becomes visible under
 *   `name` only when the whole stream was stored. If the stream errors or the
 *   signal aborts, `put` rejects and no object (and no partial object) is left
 *   under `name`; an older object under `name` stays intact.
 * - `get` resolves to the object's bytes as a stream, or rejects with
 *   {@link NotFoundError}.
 * - `stat` resolves to `null` when the object does not exist (never downloads).
 * - `list` yields every object whose name starts with `prefix` (a plain string
 *   prefix, not a directory), paging internally, in any order.
 * - `delete` removes an object; deleting a missing object is not an error.
 */
export interface Backend {
  /** Backend name for logs and errors (`filesystem`, `azure`, `s3`, `gcs`, …). */
  readonly kind: string;
  get(name: string, options?: TransferOptions): Promise<ReadableStream<Uint8Array>>;
  put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options?: TransferOptions,
  ): Promise<void>;
  stat(name: string): Promise<ObjectInfo | null>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  delete(name: string): Promise<void>;
  /** Releases connections and timers. Optional. */
  close?(): Promise<void>;
}

/** The kinds of storage failure callers tell apart. */
export type StorageErrorCode =
  | "NotFound"
  | "AccessDenied"
  | "AuthFailed"
  | "Unavailable"
  | "InvalidSettings"
  | "TooLarge"
  | "Failed";

/** Where a storage error happened. */
export interface StorageErrorContext {
  /** Backend kind (`azure`, `s3`, …). */
  backend: string;
  /** The operation (`get`, `put`, `stat`, `list`, `delete`, `connect`). */
  op: string;
  /** The object name or prefix, when there is one. */
  object?: string;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * A storage failure that carries the backend, the operation, the object and
 * the cause; its message says what to fix.
 *
 * @example
 * ```ts
 * throw new NotFoundError("no such object", { backend: "filesystem", op: "get", object: "k/m" });
 * ```
 */
export class StorageError extends Error {
  readonly code: StorageErrorCode;
  readonly backend: string;
  readonly op: string;
  readonly object?: string;

  constructor(code: StorageErrorCode, message: string, context: StorageErrorContext) {
    const where = `${context.backend} ${context.op}${
      context.object !== undefined ? ` "${context.object}"` : ""
    }`;
    super(`${where}: ${message}`, { cause: context.cause });
    this.name = `${code}Error`;
    this.code = code;
    this.backend = context.backend;
    this.op = context.op;
    this.object = context.object;
  }
}

/** The object (or container/bucket) does not exist. */
export class NotFoundError extends StorageError {
  constructor(message: string, context: StorageErrorContext) {
    super("NotFound", message, context);
  }
}

/** The credentials are valid but may not do this. */
export class AccessDeniedError extends StorageError {
  constructor(message: string, context: StorageErrorContext) {
    super("AccessDenied", message, context);
  }
}

/** The credentials were rejected (bad key, expired or refused token). */
export class AuthFailedError extends StorageError {
  constructor(message: string, context: StorageErrorContext) {
    super("AuthFailed", message, context);
  }
}

/** The service could not be reached or kept failing after retries. */
export class UnavailableError extends StorageError {
  constructor(message: string, context: StorageErrorContext) {
    super("Unavailable", message, context);
  }
}

/** The backend settings are wrong or incomplete; the message names the setting. */
export class InvalidSettingsError extends StorageError {
  constructor(message: string, context: StorageErrorContext) {
    super("InvalidSettings", message, context);
  }
}

/** The object is larger than the backend can store. */
export class TooLargeError extends StorageError {
  constructor(message: string, context: StorageErrorContext) {
    super("TooLarge", message, context);
  }
}

/** Returns true when `err` is a {@link StorageError} with the given code. */
export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}
