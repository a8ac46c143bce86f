/**
 * SFTP backend: objects are files under a cache root on an SSH server, at
 * `<cache root>/<object name>` as the Go plugin lays them out, reached with
 * the `ssh2` client.
 *
 * Better than the Go plugin's: the host key is verified (`connect.ts`),
 * uploads are atomic (a temp file renamed into place with OpenSSH's
 * `posix-rename@openssh.com`, which replaces an existing object atomically),
 * list and delete work, metadata lives in a small
 * `<object>.cicache-meta.json` beside the object (as in the filesystem
 * backend), and transfers keep several read or write requests in flight.
 * Every request runs under {@link withRetry}: a dropped connection is
 * re-established (single flight, same host key) and the request repeated at
 * its offset, so a transfer survives a reset without starting over.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { posix } from "node:path";
import {
  AccessDeniedError,
  type Backend,
  InvalidSettingsError,
  NotFoundError,
  type ObjectInfo,
  type ObjectMeta,
  StorageError,
  type TransferOptions,
  UnavailableError,
} from "../backend.ts";
import { decodeMeta, encodeMeta } from "../metadata.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";
import { DEFAULT_RETRY_POLICY, IdleTimeoutError, type RetryPolicy, withRetry } from "../transfer/retry.ts";
import type { Logger } from "../../log.ts";
import type { Settings } from "../../settings.ts";
import type { EarlySocket } from "./preconnect.ts";
import {
  connect,
  type Connected,
  connectFailure,
  type ConnectOptions,
  connectOptions,
  isConnectionError,
  isStatus,
  type Session,
  SFTP_STATUS,
  warnUnverified,
} from "./connect.ts";

const KIND = "sftp";
const META_SUFFIX = ".cicache-meta.json";
const TEMP_MARK = ".cicache-tmp-";
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/**
 * Data bytes per read/write request: OpenSSH's limit (limits@openssh.com
 * reports 255 KiB). ssh2 splits a larger write and shortens a larger read to
 * the server's limit; a short read is asked again for the rest.
 */
const REQUEST_BYTES = 255 * 1024;

/** Options of {@link SftpBackend}. */
export interface SftpBackendOptions {
  connect: ConnectOptions;
  /** Remote directory of the objects (absolute, or relative to the login directory). */
  root: string;
  log: Logger;
  /** Retry policy of each request (its `idleMs` is the per-request timeout). */
  retry?: RetryPolicy;
  /** Read or write requests in flight per transfer. */
  requestsInFlight?: number;
  /** A socket to the server opened while the backend loaded (`preconnect.ts`), for the first connect. */
  early?: EarlySocket;
}

/** Reconnects on demand: one connection at a time, one connect attempt shared by all waiting requests. */
class Link {
  #session?: Session;
  #pending?: Promise<Session>;
  #fingerprint?: string;
  #closed = false;

  constructor(readonly options: ConnectOptions, readonly log: Logger, readonly early?: EarlySocket) {}

  /**
   * The first connection, whose host key later connections must present again. Its first attempt uses the
   * socket opened early, if any.
   */
  async first(): Promise<Connected> {
    const { host, port } = this.options;
    const connected = await connect(this.options, undefined, this.early?.take(host, port));
    this.#fingerprint = connected.fingerprint;
    this.#session = connected.session;
    return connected;
  }

  session(): Promise<Session> {
    if (this.#closed) return Promise.reject(new Error("backend closed"));
    if (this.#session && !this.#session.closed) return Promise.resolve(this.#session);
    this.#pending ??= (async () => {
      try {
        const { session } = await connect(this.options, this.#fingerprint);
        this.log.info("sftp reconnected", { host: this.options.host, port: this.options.port });
        this.#session = session;
        return session;
      } finally {
        this.#pending = undefined;
      }
    })();
    return this.#pending;
  }

  close(): void {
    this.#closed = true;
    this.#session?.end();
  }
}

/** An open remote file that reopens itself on the current connection after a reconnect. */
class RemoteFile {
  #session?: Session;
  #handle?: Promise<Buffer>;
  #opened = false;

  constructor(
    readonly link: Link,
    readonly path: string,
    /** Flags of the first open; `reopen` of later ones (the file must still be the same). */
    readonly flags: string,
    readonly reopen: string,
    readonly check?: (session: Session, handle: Buffer) => Promise<void>,
  ) {}

  async use(): Promise<[Session, Buffer]> {
    const session = await this.link.session();
    if (this.#session !== session || !this.#handle) {
      const first = !this.#opened;
      this.#session = session;
      this.#handle = session.open(this.path, first ? this.flags : this.reopen).then(async (h) => {
        if (!first && this.check) await this.check(session, h);
        this.#opened = true;
        return h;
      });
      this.#handle.catch(() => {
        if (this.#session === session) this.#handle = undefined;
      });
    }
    return [session, await this.#handle];
  }

  /** Closes the handle if its connection is alive (a dead connection closed it already). */
  async close(): Promise<void> {
    const session = this.#session;
    const handle = await this.#handle?.catch(() => undefined);
    this.#handle = undefined;
    if (session && handle && !session.closed) await session.close(handle).catch(() => {});
  }
}

/**
 * Stores objects as files under a directory on an SFTP server.
 *
 * @example
 * ```ts
 * const backend = await createSftpBackend(settings, log);
 * await backend.put("key/node_modules", stream, { cicache_format: "zstd" });
 * ```
 */
export class SftpBackend implements Backend {
  readonly kind = KIND;
  readonly root: string;
  readonly #link: Link;
  readonly #log: Logger;
  readonly #policy: RetryPolicy;
  readonly #inFlight: number;

  constructor(options: SftpBackendOptions, link?: Link) {
    this.root = posix.normalize(options.root).replace(/(.)\/+$/, "$1");
    this.#log = options.log;
    this.#link = link ?? new Link(options.connect, options.log, options.early);
    this.#policy = options.retry ?? DEFAULT_RETRY_POLICY;
    this.#inFlight = Math.max(1, options.requestsInFlight ?? 16);
  }

  /** Connects (verifying the host key) and checks that the cache root is a directory. */
  async open(): Promise<void> {
    const connect = this.#link.options;
    let connected: Connected;
    try {
      connected = await withRetry(() => this.#link.first(), {
        policy: this.#policy,
        retryable: isConnectionError,
        log: this.#log,
        what: { backend: KIND, op: "connect", object: `${connect.host}:${connect.port}` },
      });
    } catch (err) {
      throw connectFailure(err, connect);
    }
    const verified = connect.hostKeys.knownHosts !== undefined || connect.hostKeys.fingerprints.length > 0;
    if (!verified) warnUnverified(this.#log, connect, connected);
    let attrs;
    try {
      attrs = await this.#request("connect", this.root, (s) => s.stat(this.root));
    } catch (err) {
      this.close();
      if (err instanceof NotFoundError) {
        throw new UnavailableError(
          `the cache root ${this.root} does not exist on ${connect.host}: create it there (mkdir -p, writable ` +
            `by ${connect.username}) or set SFTP_CACHE_ROOT to an existing directory`,
          { backend: KIND, op: "connect", object: this.root, cause: err },
        );
      }
      throw err;
    }
    if ((attrs.mode & S_IFMT) !== S_IFDIR) {
      this.close();
      throw new InvalidSettingsError(`the cache root ${this.root} is not a directory (SFTP_CACHE_ROOT)`, {
        backend: KIND,
        op: "connect",
        object: this.root,
      });
    }
    this.#log.info("using sftp backend", {
      host: connect.host,
      port: connect.port,
      user: connect.username,
      auth: connect.method,
      root: this.root,
      host_key: `${connected.keyType} ${connected.fingerprint}${
        verified ? " (verified)" : " (NOT verified)"
      }`,
    });
  }

  /** The remote path of an object; refuses names that would leave the root or collide with our own files. */
  path(name: string, op: string): string {
    const clean = name.replace(/^\/+/, "");
    const full = posix.normalize(posix.join(this.root, clean));
    const inside = this.root === "/" ? full.startsWith("/") : full.startsWith(this.root + "/");
    if (!inside || clean === "" || name.endsWith(META_SUFFIX) || name.includes(TEMP_MARK)) {
      throw new InvalidSettingsError(
        inside ? "not a valid object name" : "object name leaves the cache root",
        { backend: KIND, op, object: name },
      );
    }
    return full;
  }

  /** Runs one request with reconnects and retries; maps the final failure to a typed error. */
  async #request<T>(
    op: string,
    object: string,
    fn: (session: Session, attempt: number) => Promise<T>,
    signal?: AbortSignal,
    what?: string,
  ): Promise<T> {
    try {
      return await withRetry(async ({ signal: attempt, number }) => {
        const session = await this.#link.session();
        return await race(fn(session, number), attempt, session);
      }, {
        policy: this.#policy,
        retryable: isConnectionError,
        log: this.#log,
        signal,
        what: { backend: KIND, op, object, ...(what ? { part: what } : {}) },
      });
    } catch (err) {
      throw this.#wrap(err, op, object);
    }
  }

  /** Like {@link #request}, for a request on an open file. */
  #fileRequest<T>(
    op: string,
    object: string,
    file: RemoteFile,
    fn: (session: Session, handle: Buffer) => Promise<T>,
    signal?: AbortSignal,
    what?: string,
  ): Promise<T> {
    return this.#request(
      op,
      object,
      async () => {
        const [session, handle] = await file.use();
        return await fn(session, handle);
      },
      signal,
      what,
    );
  }

  async get(name: string, options: TransferOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const path = this.path(name, "get");
    let size = 0;
    let mtime = 0;
    // A reconnect reopens the path: it must still be the same file, not a newer object renamed over it.
    const file = new RemoteFile(this.#link, path, "r", "r", async (session, handle) => {
      const attrs = await session.fstat(handle);
      if (attrs.size !== size || attrs.mtime !== mtime) {
        await session.close(handle).catch(() => {});
        throw new StorageError("Failed", "the object was replaced during the download: restore again", {
          backend: KIND,
          op: "get",
          object: name,
        });
      }
    });
    const attrs = await this.#fileRequest("get", name, file, (s, h) => s.fstat(h), options.signal);
    if ((attrs.mode & S_IFMT) !== S_IFREG) {
      await file.close();
      throw new NotFoundError("no such object (not a regular file)", {
        backend: KIND,
        op: "get",
        object: name,
      });
    }
    size = attrs.size;
    mtime = attrs.mtime;
    const piece = REQUEST_BYTES;
    const queue: { pos: number; len: number; data: Promise<Uint8Array> }[] = [];
    let next = 0;
    const signal = options.signal;
    const readAt = (pos: number, len: number) => {
      const data = this.#fileRequest(
        "get",
        name,
        file,
        (s, h) => s.read(h, pos, len),
        signal,
        `bytes ${pos}-${pos + len - 1}`,
      );
      data.catch(() => {}); // handled when dequeued
      return { pos, len, data };
    };
    const fill = () => {
      while (queue.length < this.#inFlight && next < size) {
        const len = Math.min(piece, size - next);
        queue.push(readAt(next, len));
        next += len;
      }
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        fill();
        const head = queue.shift();
        if (!head) {
          await file.close();
          controller.close();
          return;
        }
        let data: Uint8Array;
        try {
          data = await head.data;
        } catch (err) {
          queue.length = 0;
          await file.close();
          throw err;
        }
        if (data.length < head.len) {
          if (data.length === 0) {
            await file.close();
            throw new StorageError("Failed", `the object ended at ${head.pos} bytes, expected ${size}`, {
              backend: KIND,
              op: "get",
              object: name,
            });
          }
          queue.unshift(readAt(head.pos + data.length, head.len - data.length)); // a short read: ask for the rest
        }
        controller.enqueue(data);
      },
      cancel: async () => {
        queue.length = 0;
        await file.close();
      },
    }, { highWaterMark: 0 });
  }

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions = {},
  ): Promise<void> {
    const path = this.path(name, "put");
    const temp = `${path}${TEMP_MARK}${crypto.randomUUID().slice(0, 8)}`;
    const metaTemp = `${temp}${META_SUFFIX}`;
    const { signal, release } = options;
    const file = new RemoteFile(this.#link, temp, "wx", "r+");
    const reader = body.getReader();
    const onAbort = () => reader.cancel(signal?.reason).catch(() => {});
    signal?.addEventListener("abort", onAbort, { once: true });
    let written = 0;
    try {
      // Temp files of killed saves of this key (best effort; younger ones may belong to a running save).
      await this.#sweepTemps(posix.dirname(path), name);
      // Open the temp file first (making the directories when missing).
      try {
        await this.#fileRequest("put", name, file, async () => {}, signal);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        await this.#mkdirs(posix.dirname(path), name, signal);
        await this.#fileRequest("put", name, file, async () => {}, signal);
      }
      const inFlight = new Set<Promise<void>>();
      const state: { failure?: { err: unknown } } = {};
      const throwIfFailed = () => {
        if (state.failure) throw state.failure.err;
      };
      for (;;) {
        signal?.throwIfAborted();
        throwIfFailed();
        const { value, done } = await reader.read();
        signal?.throwIfAborted(); // an abort cancels the body, which then reads as done
        if (done) break;
        const piece = REQUEST_BYTES;
        // The chunk goes back to the producer only when every one of its pieces was written: count them all
        // before the first is sent (an early reply must not release a chunk with pieces still to send).
        let pending = Math.ceil(value.length / piece);
        for (let off = 0; off < value.length; off += piece) {
          while (inFlight.size >= this.#inFlight) await Promise.race(inFlight);
          throwIfFailed();
          const data = value.subarray(off, Math.min(off + piece, value.length));
          const pos = written;
          written += data.length;
          const request = this.#fileRequest(
            "put",
            name,
            file,
            (s, h) => s.write(h, pos, data),
            signal,
            `bytes ${pos}-${pos + data.length - 1}`,
          ).then(() => {
            if (--pending === 0) release?.(value);
          }, (err) => {
            state.failure ??= { err };
          }).finally(() => inFlight.delete(request));
          inFlight.add(request);
        }
      }
      await Promise.all(inFlight);
      throwIfFailed();
      await file.close();
      const size = written;
      // Metadata first, then the object: a reader never sees the object before its metadata.
      await this.#writeSmall(metaTemp, JSON.stringify(encodeMeta(meta)), name, signal);
      await this.#rename(metaTemp, `${path}${META_SUFFIX}`, name, signal);
      await this.#rename(temp, path, name, signal, size);
    } catch (err) {
      await file.close();
      await reader.cancel().catch(() => {});
      await this.#removeQuietly(temp, name);
      await this.#removeQuietly(metaTemp, name);
      throw this.#wrap(signal?.aborted ? signal.reason ?? err : err, "put", name);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Creates `dir` and its missing parents below the root. */
  async #mkdirs(dir: string, object: string, signal?: AbortSignal): Promise<void> {
    const rel = posix.relative(this.root, dir);
    if (rel === "" || rel.startsWith("..")) return;
    let cur = this.root;
    for (const part of rel.split("/")) {
      cur = posix.join(cur, part);
      const at = cur;
      await this.#request("put", object, async (s) => {
        try {
          await s.mkdir(at);
        } catch (err) {
          // Exists already (maybe made by a concurrent save), or a real failure that stat reveals.
          const attrs = await s.stat(at).catch(() => undefined);
          if (!attrs || (attrs.mode & S_IFMT) !== S_IFDIR) throw err;
        }
      }, signal);
    }
  }

  async #writeSmall(path: string, text: string, object: string, signal?: AbortSignal): Promise<void> {
    const data = new TextEncoder().encode(text);
    const file = new RemoteFile(this.#link, path, "w", "w");
    try {
      await this.#fileRequest("put", object, file, (s, h) => s.write(h, 0, data), signal);
    } finally {
      await file.close();
    }
  }

  /**
   * Renames into place. A retried rename whose first attempt did succeed (the
   * reply was lost with the connection) finds the source gone and the target
   * of the expected size: that counts as done.
   */
  async #rename(
    from: string,
    to: string,
    object: string,
    signal?: AbortSignal,
    size?: number,
  ): Promise<void> {
    await this.#request("put", object, async (s, attempt) => {
      try {
        await s.rename(from, to);
      } catch (err) {
        if (
          !s.posixRename && isStatus(err, SFTP_STATUS.FAILURE) &&
          await s.stat(to).then(() => true, () => false)
        ) {
          // Plain SFTP rename cannot replace a file: remove the old object first (a short cache-miss window).
          await s.unlink(to);
          return await s.rename(from, to);
        }
        if (attempt > 0 && isStatus(err, SFTP_STATUS.NO_SUCH_FILE)) {
          const attrs = await s.stat(to).catch(() => undefined);
          if (attrs && (size === undefined || attrs.size === size)) return;
        }
        throw err;
      }
    }, signal);
  }

  async #removeQuietly(path: string, object: string): Promise<void> {
    try {
      await this.#request("delete", object, async (s) => {
        await s.unlink(path).catch((err) => {
          if (!isStatus(err, SFTP_STATUS.NO_SUCH_FILE)) throw err;
        });
      });
    } catch (err) {
      this.#log.warn("could not remove a temporary file", { path, error: String(err) });
    }
  }

  /**
   * Removes temp files (invisible to `list`) under `prefix` last modified more than `olderThanMs` ago: what
   * saves killed with `kill -9` left. Flush calls it; `put` sweeps the directory it writes into. Returns how
   * many went; failures are logged, never thrown.
   *
   * @example
   * ```ts
   * await backend.sweepStale("key/");
   * ```
   */
  async sweepStale(prefix: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    const clean = prefix.replace(/^\/+/, "");
    const slash = clean.lastIndexOf("/");
    const base = slash >= 0 ? posix.normalize(posix.join(this.root, clean.slice(0, slash))) : this.root;
    if (base !== this.root && !base.startsWith(this.root.replace(/\/$/, "") + "/")) return 0;
    let removed = 0;
    const visit = async (dir: string): Promise<void> => {
      removed += await this.#sweepTemps(dir, prefix, olderThanMs);
      const entries = await this.#request("list", prefix, (s) => s.readdir(dir)).catch(() => []);
      for (const e of entries) {
        if (e.filename !== "." && e.filename !== ".." && (e.attrs.mode & S_IFMT) === S_IFDIR) {
          await visit(posix.join(dir, e.filename));
        }
      }
    };
    await visit(base);
    return removed;
  }

  /** Removes stale temp files (and their metadata temps) directly in `dir`. */
  async #sweepTemps(dir: string, object: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    let removed = 0;
    try {
      const entries = await this.#request("list", object, (s) => s.readdir(dir));
      for (const e of entries) {
        if (!e.filename.includes(TEMP_MARK) || (e.attrs.mode & S_IFMT) !== S_IFREG) continue;
        if (Date.now() - e.attrs.mtime * 1000 < olderThanMs) continue;
        const path = posix.join(dir, e.filename);
        await this.#request("delete", object, (s) => s.unlink(path)).then(() => removed++, () => {});
      }
    } catch (err) {
      if (!(err instanceof NotFoundError)) {
        this.#log.debug("sftp: could not look for stale temp files", { dir, error: String(err) });
      }
    }
    if (removed > 0) this.#log.info("removed stale temp files of killed saves", { dir, files: removed });
    return removed;
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    const path = this.path(name, "stat");
    let attrs;
    try {
      attrs = await this.#request("stat", name, (s) => s.stat(path));
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
    if ((attrs.mode & S_IFMT) !== S_IFREG) return null;
    return {
      name,
      size: attrs.size,
      modified: new Date(attrs.mtime * 1000),
      meta: await this.#readMeta(path, name),
    };
  }

  async #readMeta(path: string, object: string): Promise<ObjectMeta> {
    const file = new RemoteFile(this.#link, `${path}${META_SUFFIX}`, "r", "r");
    try {
      const data = await this.#fileRequest("stat", object, file, (s, h) => s.read(h, 0, 64 * 1024));
      const parsed = JSON.parse(new TextDecoder().decode(data));
      return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? decodeMeta(parsed) : {};
    } catch {
      return {}; // none (a Go plugin object) or unreadable
    } finally {
      await file.close();
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const clean = prefix.replace(/^\/+/, "");
    // Start the walk at the deepest directory the prefix names completely.
    const slash = clean.lastIndexOf("/");
    const baseName = slash >= 0 ? clean.slice(0, slash) : "";
    const base = baseName === "" ? this.root : posix.normalize(posix.join(this.root, baseName));
    if (base !== this.root && !base.startsWith(this.root.replace(/\/$/, "") + "/")) return;
    yield* this.#walk(base, baseName, clean);
  }

  async *#walk(dir: string, rel: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      entries = await this.#request("list", prefix, (s) => s.readdir(dir));
    } catch (err) {
      if (err instanceof NotFoundError) return;
      throw err;
    }
    entries.sort((a, b) => (a.filename < b.filename ? -1 : 1));
    for (const entry of entries) {
      if (entry.filename === "." || entry.filename === "..") continue;
      const name = rel === "" ? entry.filename : `${rel}/${entry.filename}`;
      const type = entry.attrs.mode & S_IFMT;
      if (type === S_IFDIR) {
        if (prefix.startsWith(name + "/") || name.startsWith(prefix)) {
          yield* this.#walk(posix.join(dir, entry.filename), name, prefix);
        }
      } else if (
        type === S_IFREG && name.startsWith(prefix) && !name.endsWith(META_SUFFIX) &&
        !name.includes(TEMP_MARK)
      ) {
        yield { name, size: entry.attrs.size, modified: new Date(entry.attrs.mtime * 1000), meta: {} };
      }
    }
  }

  async delete(name: string): Promise<void> {
    const path = this.path(name, "delete");
    for (const p of [path, `${path}${META_SUFFIX}`]) {
      await this.#request("delete", name, async (s) => {
        await s.unlink(p).catch((err) => {
          if (!isStatus(err, SFTP_STATUS.NO_SUCH_FILE)) throw err;
        });
      });
    }
    // Remove directories left empty, up to the root (rmdir fails on a non-empty one: then stop).
    let dir = posix.dirname(path);
    while (dir.startsWith(this.root.replace(/\/$/, "") + "/") && dir !== this.root) {
      const at = dir;
      const removed = await this.#request("delete", name, (s) => s.rmdir(at).then(() => true, () => false))
        .catch(() => false);
      if (!removed) break;
      dir = posix.dirname(dir);
    }
  }

  close(): Promise<void> {
    this.#link.close();
    return Promise.resolve();
  }

  #wrap(err: unknown, op: string, object: string): StorageError {
    if (err instanceof StorageError) return err;
    const ctx = { backend: KIND, op, object, cause: err };
    if (isStatus(err, SFTP_STATUS.NO_SUCH_FILE)) return new NotFoundError("no such object", ctx);
    if (isStatus(err, SFTP_STATUS.PERMISSION_DENIED)) {
      return new AccessDeniedError(
        `permission denied under ${this.root}: check that ${this.#link.options.username} may write there`,
        ctx,
      );
    }
    if (err instanceof IdleTimeoutError || isConnectionError(err)) {
      const text = err instanceof Error ? err.message : String(err);
      return new UnavailableError(`the SFTP connection kept failing (${text})`, ctx);
    }
    const text = err instanceof Error ? err.message : String(err);
    return new StorageError("Failed", text, ctx);
  }
}

/**
 * Resolves with the request, or rejects when the attempt's signal aborts
 * (idle timeout or the caller's abort). A hung request's connection is
 * dropped so the retry reconnects.
 */
function race<T>(request: Promise<T>, signal: AbortSignal, session: Session): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      if (signal.reason instanceof IdleTimeoutError) session.destroy();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    request.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Creates the sftp backend from the settings: checks them, connects
 * (verifying the host key, or warning loudly when nothing to verify it
 * against is set) and checks the cache root. `early` is the socket
 * `preconnect()` (preconnect.ts) opened while this module loaded: the first connect uses
 * it (and it is closed if the settings fail before).
 *
 * @example
 * ```ts
 * const backend = await createSftpBackend(settings, log);
 * ```
 */
export async function createSftpBackend(
  settings: Settings,
  log: Logger,
  early?: EarlySocket,
): Promise<Backend> {
  try {
    if (settings.sftpCacheRoot.trim() === "") {
      throw new InvalidSettingsError(
        "SFTP_CACHE_ROOT is not set: set it to the directory on the SFTP server that holds the cache",
        { backend: KIND, op: "connect" },
      );
    }
    const options = await connectOptions(settings);
    const backend = new SftpBackend({
      connect: options,
      root: settings.sftpCacheRoot.trim(),
      log,
      retry: { ...DEFAULT_RETRY_POLICY, idleMs: settings.backendOperationTimeout },
      requestsInFlight: Math.max(8, settings.transferConcurrency * 4),
      early,
    });
    await backend.open();
    return backend;
  } finally {
    early?.drop(); // unused when the settings failed before the first connect
  }
}
