/**
 * Filesystem backend: objects are files under a root directory (usually a
 * volume shared between CI steps), at `<root>/<object name>` as the Go plugin
 * lays them out. Writes are atomic (temp file + rename), metadata goes to a
 * small `<object>.cicache-meta.json` beside the object, and list and delete
 * work (the Go plugin's do not).
 *
 * @module
 */
import { dirname, join, resolve, sep as SEPARATOR } from "node:path";
import {
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
import type { Logger } from "../../log.ts";
import { describeSource, type Settings } from "../../settings.ts";
import { STALE_AFTER_MS } from "../../cache/cleanup.ts";

const META_SUFFIX = ".cicache-meta.json";

/** Chunks at least this big are written as they are; smaller ones are gathered first. */
const DIRECT_WRITE = 256 << 10;
/** Size of the buffer small chunks are gathered in before one `write`. */
const GATHER = 1 << 20;

/**
 * Writes the whole stream to `file` (each write on Deno's blocking pool
 * while the producer makes the next chunk), handing every chunk to
 * `options.release` once it was written or copied. Small chunks (an
 * uncompressed tar of many small files arrives as one chunk per file) are
 * gathered into one 1 MiB buffer first: one `write` per chunk cost more CPU
 * than the archive work itself. Rejects with the signal's reason when it
 * aborts.
 */
async function writeAll(
  body: ReadableStream<Uint8Array>,
  file: Deno.FsFile,
  options: TransferOptions,
): Promise<void> {
  const { signal, release } = options;
  const reader = body.getReader();
  const onAbort = () => reader.cancel(signal?.reason).catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let gather: Uint8Array | undefined;
  let fill = 0;
  const write = async (data: Uint8Array) => {
    let off = 0;
    while (off < data.length) off += await file.write(data.subarray(off));
  };
  const flush = async () => {
    if (fill > 0) await write(gather!.subarray(0, fill));
    fill = 0;
  };
  try {
    for (;;) {
      signal?.throwIfAborted();
      const { value, done } = await reader.read();
      signal?.throwIfAborted(); // an abort cancels the body, which then reads as done
      if (done) return await flush();
      if (value.length >= DIRECT_WRITE) {
        await flush();
        await write(value);
      } else {
        if (fill + value.length > GATHER) await flush();
        (gather ??= new Uint8Array(GATHER)).set(value, fill);
        fill += value.length;
      }
      release?.(value);
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    reader.releaseLock();
  }
}
const TEMP_MARK = ".cicache-tmp-";

/**
 * Stores objects as files under `root`.
 *
 * @example
 * ```ts
 * const fs = new FilesystemBackend("/tmp/cache");
 * await fs.put("key/node_modules", stream, { cicache_format: "zstd" });
 * ```
 */
export class FilesystemBackend implements Backend {
  readonly kind = "filesystem";
  readonly root: string;
  readonly #log?: Logger;

  /** `log` receives a line when stale temp files of killed saves are swept. */
  constructor(root: string, log?: Logger) {
    this.root = resolve(root);
    this.#log = log;
  }

  /** The file path of an object; refuses names that would leave the root. */
  path(name: string, op: string): string {
    const full = resolve(this.root, name.replace(/^\/+/, ""));
    if (full !== this.root && !full.startsWith(this.root + SEPARATOR)) {
      throw new InvalidSettingsError("object name leaves the cache root", {
        backend: this.kind,
        op,
        object: name,
      });
    }
    if (full === this.root || name.endsWith(META_SUFFIX) || name.includes(TEMP_MARK)) {
      throw new InvalidSettingsError("not a valid object name", { backend: this.kind, op, object: name });
    }
    return full;
  }

  async get(name: string, _options?: TransferOptions): Promise<ReadableStream<Uint8Array>> {
    const file = await this.#open(name, "get");
    // 1 MiB reads: `file.readable` yields 64 KiB chunks, and the per-chunk cost of the stream stages after
    // it was a third of a tar restore.
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const buf = new Uint8Array(1 << 20);
        const n = await file.read(buf);
        if (n === null) {
          file.close();
          controller.close();
        } else {
          controller.enqueue(buf.subarray(0, n));
        }
      },
      cancel() {
        file.close();
      },
    });
  }

  async #open(name: string, op: string): Promise<Deno.FsFile> {
    const path = this.path(name, op);
    try {
      const info = await Deno.stat(path);
      if (!info.isFile) throw new Deno.errors.NotFound();
      return await Deno.open(path, { read: true });
    } catch (err) {
      throw this.#wrap(err, op, name);
    }
  }

  async put(
    name: string,
    body: ReadableStream<Uint8Array>,
    meta: ObjectMeta,
    options: TransferOptions = {},
  ): Promise<void> {
    const path = this.path(name, "put");
    const temp = `${path}${TEMP_MARK}${crypto.randomUUID().slice(0, 8)}`;
    let file: Deno.FsFile | undefined;
    try {
      await Deno.mkdir(dirname(path), { recursive: true });
      await this.#sweepTemps(dirname(path));
      file = await Deno.open(temp, { write: true, createNew: true, mode: 0o644 });
      await writeAll(body, file, options);
      file.close();
      file = undefined;
      await Deno.writeTextFile(`${temp}${META_SUFFIX}`, JSON.stringify(encodeMeta(meta)));
      await Deno.rename(`${temp}${META_SUFFIX}`, `${path}${META_SUFFIX}`);
      await Deno.rename(temp, path);
    } catch (err) {
      try {
        file?.close();
      } catch { /* already closed */ }
      await Deno.remove(temp).catch(() => {});
      await Deno.remove(`${temp}${META_SUFFIX}`).catch(() => {});
      await body.cancel().catch(() => {});
      throw this.#wrap(options.signal?.aborted ? options.signal.reason ?? err : err, "put", name);
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    const path = this.path(name, "stat");
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw this.#wrap(err, "stat", name);
    }
    if (!info.isFile) return null;
    return { name, size: info.size, modified: info.mtime ?? new Date(0), meta: await this.#readMeta(path) };
  }

  async #readMeta(path: string): Promise<ObjectMeta> {
    try {
      const stored: unknown = JSON.parse(await Deno.readTextFile(`${path}${META_SUFFIX}`));
      return stored !== null && typeof stored === "object" && !Array.isArray(stored)
        ? decodeMeta(stored as Record<string, unknown>)
        : {};
    } catch {
      return {};
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const clean = prefix.replace(/^\/+/, "");
    // Start the walk at the deepest directory the prefix names completely.
    const slash = clean.lastIndexOf("/");
    const baseName = slash >= 0 ? clean.slice(0, slash) : "";
    const base = baseName === "" ? this.root : resolve(this.root, baseName);
    if (base !== this.root && !base.startsWith(this.root + SEPARATOR)) return;
    yield* this.#walk(base, baseName, clean);
  }

  async *#walk(dir: string, rel: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) return;
      throw this.#wrap(err, "list", prefix);
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      const name = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory) {
        if (prefix.startsWith(name + "/") || (name + "/").startsWith(prefix) || name.startsWith(prefix)) {
          yield* this.#walk(join(dir, entry.name), name, prefix);
        }
      } else if (
        entry.isFile && name.startsWith(prefix) && !name.endsWith(META_SUFFIX) && !name.includes(TEMP_MARK)
      ) {
        const info = await this.stat(name).catch(() => null);
        if (info) yield info;
      }
    }
  }

  /**
   * Removes temp files (invisible to `list`) under `prefix` older than
   * `olderThanMs`: what saves killed with `kill -9` left. Flush calls it;
   * `put` sweeps the directory it writes into. Returns how many went.
   *
   * @example
   * ```ts
   * await backend.sweepStale("key/");
   * ```
   */
  async sweepStale(prefix: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    const clean = prefix.replace(/^\/+/, "");
    const slash = clean.lastIndexOf("/");
    const base = slash >= 0 ? resolve(this.root, clean.slice(0, slash)) : this.root;
    if (base !== this.root && !base.startsWith(this.root + SEPARATOR)) return 0;
    let removed = 0;
    const visit = async (dir: string) => {
      removed += await this.#sweepTemps(dir, olderThanMs);
      for await (const entry of Deno.readDir(dir)) if (entry.isDirectory) await visit(join(dir, entry.name));
    };
    await visit(base).catch(() => {});
    return removed;
  }

  /** Removes stale temp files (and their metadata) directly in `dir`; errors are ignored (best effort). */
  async #sweepTemps(dir: string, olderThanMs = STALE_AFTER_MS): Promise<number> {
    let removed = 0;
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (!entry.isFile || !entry.name.includes(TEMP_MARK)) continue;
        const path = join(dir, entry.name);
        const info = await Deno.lstat(path).catch(() => null);
        if (!info?.mtime || Date.now() - info.mtime.getTime() < olderThanMs) continue;
        await Deno.remove(path).then(() => removed++, () => {});
      }
    } catch {
      // no directory: nothing to sweep
    }
    if (removed > 0) this.#log?.info("removed stale temp files of killed saves", { dir, files: removed });
    return removed;
  }

  async delete(name: string): Promise<void> {
    const path = this.path(name, "delete");
    for (const p of [path, `${path}${META_SUFFIX}`]) {
      try {
        await Deno.remove(p);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw this.#wrap(err, "delete", name);
      }
    }
    await this.#pruneEmptyDirs(dirname(path));
  }

  /** Removes directories left empty by a delete, up to the root. */
  async #pruneEmptyDirs(dir: string): Promise<void> {
    let cur = dir;
    while (cur.startsWith(this.root + SEPARATOR)) {
      try {
        await Deno.remove(cur); // fails when not empty
      } catch {
        return;
      }
      cur = dirname(cur);
    }
  }

  #wrap(err: unknown, op: string, object: string): StorageError {
    if (err instanceof StorageError) return err;
    const ctx = { backend: this.kind, op, object, cause: err };
    if (err instanceof Deno.errors.NotFound) return new NotFoundError("no such object", ctx);
    if (err instanceof Deno.errors.PermissionDenied) {
      return new StorageError(
        "AccessDenied",
        `permission denied under ${this.root}: check the volume's owner and mode`,
        ctx,
      );
    }
    const text = err instanceof Error ? err.message : String(err);
    return new StorageError("Failed", text, ctx);
  }
}

/**
 * Creates the filesystem backend from the settings. The root must exist (it
 * is normally a mounted volume; a missing root means the volume is not
 * mounted), and `/` is refused.
 */
export async function createFilesystemBackend(settings: Settings, log: Logger): Promise<Backend> {
  const root = settings.filesystemCacheRoot;
  const ctx = { backend: "filesystem", op: "connect", object: root };
  const setting = describeSource(settings, "filesystemCacheRoot");
  if (resolve(root) === "/") {
    throw new InvalidSettingsError(
      `${setting} must not be /: point it at the cache volume, e.g. /tmp/cache`,
      ctx,
    );
  }
  try {
    const info = await Deno.stat(root);
    if (!info.isDirectory) {
      throw new InvalidSettingsError(`cache root ${root} is not a directory (${setting})`, ctx);
    }
  } catch (err) {
    if (err instanceof StorageError) throw err;
    if (err instanceof Deno.errors.NotFound) {
      // A missing root is a pipeline mistake (the volume is not mounted), not an outage: exit 1.
      throw new InvalidSettingsError(
        `cache root ${root} does not exist: make sure the cache volume is mounted there, ` +
          `or set ${setting} to an existing directory`,
        { ...ctx, cause: err },
      );
    }
    throw new UnavailableError(`cache root ${root} is not accessible`, { ...ctx, cause: err });
  }
  log.info("using filesystem backend", { root: resolve(root) });
  return new FilesystemBackend(root, log);
}
