/**
 * Safe extraction of a tar stream into a mount, re-rooted from the archive's
 * save-time root to the restore-time mount, with integrity verification and
 * staging (DESIGN §4).
 *
 * Rules:
 * - Re-rooting: the archive root (our opening header's `cicache.name`, else
 *   the `savedRoot` hint, else the first entry's name, which is the mount root
 *   in Go plugin and GNU tar archives) maps to the mount's absolute path.
 *   Entries outside the root are refused with {@link UnsafeArchiveError}.
 * - Nothing is written through a symlink: every parent of an entry must be a
 *   real directory (checked with `lstat`, cached per extraction), files are
 *   created with `O_EXCL` after removing whatever was there (so an existing
 *   file is truncated, an existing symlink replaced, a hard link broken).
 *   Hard links must point inside the mount (the link target goes through the
 *   same re-rooting). Symlink entries are created verbatim (targets not
 *   checked): creating a symlink writes nothing through it.
 * - Integrity: the SHA-256 of the tar bytes before our trailer and its entry
 *   count must match; truncation or any parse error is a
 *   {@link CorruptArchiveError}. Archives without our headers (Go plugin, GNU
 *   tar) restore with `verified: false` and a warning.
 * - Staging: a missing mount (or an empty directory, a file, a symlink) is
 *   extracted beside it under a hidden name and renamed into place only after
 *   the whole stream verified; on failure the staging copy is removed. A
 *   non-empty directory is merged in place; a failure there is thrown.
 * - Modes always (setuid/setgid/sticky included); mtimes and ownership with
 *   `preserveMetadata`. Directory modes and times are applied last, deepest
 *   first, as GNU tar does. Sockets cannot be in an archive; FIFOs and device
 *   nodes are skipped with a warning (a cache has no use for them, and
 *   creating them needs privileges and `mknod`, which Deno does not expose).
 *
 * @module
 */
import { posix } from "node:path";
import { createHash, type Hash } from "node:crypto";
import type { Logger } from "../log.ts";
import { CorruptArchiveError, UnsafeArchiveError } from "./errors.ts";
import type { ArchiveStats } from "./pack.ts";
import { TarFormatError, type TarHeader, TarReader, TYPE } from "./tar.ts";
import { type ArchiveInfo, parseOpening, parseTrailer, type Trailer } from "./trailer.ts";
import { onCancel } from "../cache/cleanup.ts";

export { CorruptArchiveError, UnsafeArchiveError };

/** Where and how to extract. */
export interface UnpackOptions {
  /** The restore-time mount as configured (after expansion). */
  mount: string;
  /** Resolves relative mounts (default `Deno.cwd()`). */
  cwd?: string;
  /** Restore mtimes and ownership (modes are always restored). */
  preserveMetadata?: boolean;
  /** The save-time root from the object's `cicache_root` metadata, for archives without our header. */
  savedRoot?: string;
  /** Receives warnings (unverified archive, skipped entries). */
  log?: Logger;
}

/** What {@link unpackToMount} did. */
export interface UnpackResult extends ArchiveStats {
  /** True when our integrity trailer was present and matched. */
  verified: boolean;
  /** True when extracted beside the mount and renamed into place. */
  staged: boolean;
  /** Absolute path of the mount. */
  target: string;
}

/** Normalizes an entry name: `.`/`..` resolved lexically, no trailing slash, no leading `./`. */
function normName(name: string): string {
  let n = posix.normalize(name);
  if (n.length > 1 && n.endsWith("/")) n = n.slice(0, -1);
  return n;
}

/** The path of `name` relative to the archive root `root` ("" for the root), or null when outside it. */
function relUnder(name: string, root: string): string | null {
  const absName = name.startsWith("/");
  if (absName !== root.startsWith("/")) return null;
  if (root === "/") return name.slice(1);
  if (root === ".") return name === ".." || name.startsWith("../") ? null : name === "." ? "" : name;
  if (name === root) return "";
  if (name.startsWith(root + "/")) return name.slice(root.length + 1);
  return null;
}

function typeName(flag: number): string {
  return flag === 0 ? "NUL" : `'${String.fromCharCode(flag)}'`;
}

function isNotFound(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound;
}

/** A filesystem error (or one of the extractor's plain errors), as opposed to a typed or stream error. */
function isFsError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.constructor === Error) return true;
  return Object.values(Deno.errors).some((cls) => err instanceof cls);
}

function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

function isEmptyDir(path: string): boolean {
  for (const _ of Deno.readDirSync(path)) return false;
  return true;
}

/** A pending directory mode/time, applied after the directory's contents. */
interface DirMeta {
  path: string;
  mode: number;
  mtime: number;
  atime?: number;
  uid: number;
  gid: number;
}

/** The filesystem side of one extraction: safe path resolution and entry creation. */
class Extractor {
  readonly base: string;
  readonly stats: ArchiveStats = { entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0 };
  #dirs = new Set<string>(); // relative dirs known to be real directories
  #dirMeta: DirMeta[] = [];
  #preserve: boolean;
  #umask: number;
  #log?: Logger;
  /** True once anything was created under `base` (or `base` itself). */
  touched = false;

  constructor(base: string, preserve: boolean, log?: Logger) {
    this.base = base;
    this.#preserve = preserve;
    this.#log = log;
    this.#umask = Deno.umask();
  }

  abs(rel: string): string {
    return rel === "" ? this.base : `${this.base}/${rel}`;
  }

  /**
   * Makes sure every directory from the base down to `rel` is a real
   * directory, creating missing ones; a symlink on the way is refused.
   */
  #ensureDir(rel: string, entry: string, create = true): void {
    if (this.#dirs.has(rel)) return;
    if (rel !== "") this.#ensureDir(posix.dirname(rel) === "." ? "" : posix.dirname(rel), entry, create);
    const path = this.abs(rel);
    const info = lstatOrNull(path);
    if (info === null) {
      if (!create) {
        throw new CorruptArchiveError(`hard link ${JSON.stringify(entry)}: ${path} does not exist`);
      }
      Deno.mkdirSync(path);
      this.touched = true;
    } else if (info.isSymlink) {
      throw new UnsafeArchiveError(
        `refusing entry ${
          JSON.stringify(entry)
        }: its parent ${path} is a symlink, and extraction never writes through one`,
      );
    } else if (!info.isDirectory) {
      throw new Error(
        `cannot extract ${JSON.stringify(entry)}: ${path} is in the way and is not a directory`,
      );
    }
    this.#dirs.add(rel);
  }

  #parentOf(rel: string): string {
    const d = posix.dirname(rel);
    return d === "." ? "" : d;
  }

  /** Removes whatever non-directory (or empty directory) sits at `path`, so a new entry can be created. */
  #clear(path: string, rel: string, entry: string): void {
    const info = lstatOrNull(path);
    if (info === null) return;
    try {
      Deno.removeSync(path); // not recursive: a non-empty directory fails
    } catch (err) {
      throw new Error(
        `cannot extract ${JSON.stringify(entry)}: ${path} exists and cannot be replaced: ${
          (err as Error).message
        }`,
        { cause: err },
      );
    }
    if (info.isDirectory) this.#dirs.delete(rel);
  }

  /** Applies a mode exactly (open/mkdir apply the umask and drop nothing else). */
  #needsChmod(mode: number): boolean {
    return (mode & ~0o777) !== 0 || (mode & this.#umask) !== 0;
  }

  dir(rel: string, h: TarHeader): void {
    const path = this.abs(rel);
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    const info = lstatOrNull(path);
    if (info === null || !info.isDirectory) {
      if (info !== null) this.#clear(path, rel, h.name);
      Deno.mkdirSync(path, { mode: 0o700 });
      this.touched = true;
    }
    this.#dirs.add(rel);
    this.#dirMeta.push({ path, mode: h.mode, mtime: h.mtime, atime: h.atime, uid: h.uid, gid: h.gid });
    this.stats.dirs++;
  }

  async file(rel: string, h: TarHeader, tar: TarReader): Promise<void> {
    const path = this.abs(rel);
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    const mode = h.mode & 0o7777;
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path, { write: true, createNew: true, mode: mode & 0o777 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      this.#clear(path, rel, h.name);
      file = Deno.openSync(path, { write: true, createNew: true, mode: mode & 0o777 });
    }
    this.touched = true;
    try {
      for (let part = await tar.read(); part; part = await tar.read()) {
        let off = 0;
        while (off < part.length) off += file.writeSync(part.subarray(off));
      }
      if (this.#preserve) file.utimeSync(h.atime ?? h.mtime, h.mtime);
    } finally {
      file.close();
    }
    if (this.#needsChmod(mode)) Deno.chmodSync(path, mode);
    if (this.#preserve) this.#chown(path, h);
    this.stats.files++;
    this.stats.bytes += h.size;
  }

  symlink(rel: string, h: TarHeader): void {
    const path = this.abs(rel);
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    try {
      Deno.symlinkSync(h.linkname, path);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      this.#clear(path, rel, h.name);
      Deno.symlinkSync(h.linkname, path);
    }
    this.#dirs.delete(rel);
    this.touched = true;
    this.stats.symlinks++;
  }

  hardlink(rel: string, sourceRel: string, h: TarHeader): void {
    const path = this.abs(rel);
    const source = this.abs(sourceRel);
    if (sourceRel === "" || sourceRel === rel) {
      throw new UnsafeArchiveError(
        `refusing hard link ${JSON.stringify(h.name)} to ${JSON.stringify(h.linkname)}`,
      );
    }
    this.#ensureDir(this.#parentOf(sourceRel), h.name, false);
    const info = lstatOrNull(source);
    if (info === null) {
      throw new CorruptArchiveError(
        `hard link ${JSON.stringify(h.name)}: its target ${source} does not exist`,
      );
    }
    if (info.isDirectory) {
      throw new UnsafeArchiveError(`refusing hard link ${JSON.stringify(h.name)} to the directory ${source}`);
    }
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    try {
      Deno.linkSync(source, path);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      this.#clear(path, rel, h.name);
      Deno.linkSync(source, path);
    }
    this.touched = true;
    this.stats.hardlinks++;
  }

  #chown(path: string, h: { uid: number; gid: number }): void {
    try {
      Deno.chownSync(path, h.uid, h.gid);
    } catch {
      // Not permitted (not root): ownership stays the extracting user's, as GNU tar does.
    }
  }

  /** Applies directory modes (and times, ownership) deepest and last first. */
  finishDirs(): void {
    for (let i = this.#dirMeta.length - 1; i >= 0; i--) {
      const d = this.#dirMeta[i];
      const info = lstatOrNull(d.path);
      if (info === null || !info.isDirectory) continue; // replaced later in the archive: never follow a symlink
      if (this.#preserve) this.#chown(d.path, d);
      Deno.chmodSync(d.path, d.mode);
      if (this.#preserve) Deno.utimeSync(d.path, d.atime ?? d.mtime, d.mtime);
    }
    this.#dirMeta = [];
  }
}

/**
 * Hash sink that stops once the trailer was reached. The reader hands it
 * many small slices (headers, file data); adjacent slices of one input chunk
 * are hashed in one call, which saves most of the per-call cost.
 */
class TarHash {
  #hash: Hash = createHash("sha256");
  #done = false;
  #pending: Uint8Array | undefined;
  update(bytes: Uint8Array): void {
    if (this.#done || bytes.length === 0) return;
    const p = this.#pending;
    if (p && p.buffer === bytes.buffer && p.byteOffset + p.length === bytes.byteOffset) {
      this.#pending = new Uint8Array(p.buffer, p.byteOffset, p.length + bytes.length);
      return;
    }
    this.flush();
    this.#pending = bytes;
  }
  flush(): void {
    if (this.#pending) this.#hash.update(this.#pending);
    this.#pending = undefined;
  }
  digest(): string {
    this.flush();
    this.#done = true;
    return this.#hash.digest("hex");
  }
}

/**
 * Extracts an uncompressed tar stream into the mount, safely (see the module
 * doc for the rules). Resolves with what was extracted; rejects with
 * {@link CorruptArchiveError} (damaged or truncated), {@link UnsafeArchiveError}
 * (an entry would escape the mount or write through a symlink), or the
 * filesystem/stream error. When staging, a rejection leaves nothing behind.
 *
 * @example
 * ```ts
 * const { stream } = decompressStream();
 * const result = await unpackToMount(body.pipeThrough(stream), { mount: "node_modules", log });
 * if (!result.verified) log.warn("restored an archive without integrity trailer");
 * ```
 */
export async function unpackToMount(
  tar: ReadableStream<Uint8Array>,
  options: UnpackOptions,
): Promise<UnpackResult> {
  const cwd = options.cwd ?? Deno.cwd();
  const target = posix.resolve(cwd, options.mount);
  const log = options.log;
  const existing = lstatOrNull(target);
  const staged = existing === null || !existing.isDirectory || isEmptyDir(target);
  let base = target;
  if (staged) {
    const parent = posix.dirname(target);
    Deno.mkdirSync(parent, { recursive: true });
    base = posix.join(parent, `.${posix.basename(target)}.cicache-${crypto.randomUUID().slice(0, 8)}`);
  }
  const ex = new Extractor(base, options.preserveMetadata ?? false, log);
  const unregister = staged
    ? onCancel(
      `staging directory ${base} removed`,
      () => Deno.remove(base, { recursive: true }).catch(() => {}),
    )
    : () => {};

  const hash = new TarHash();
  let opening: ArchiveInfo | undefined;
  let trailer: (Trailer & { actual: string; entriesBefore: number }) | undefined;
  let root: string | undefined;
  let entries = 0;
  const onGlobal = (records: Record<string, string>): boolean => {
    const t = parseTrailer(records);
    if (t) {
      if (trailer) throw new CorruptArchiveError("the archive has two integrity trailers");
      trailer = { ...t, actual: hash.digest(), entriesBefore: entries };
      return false;
    }
    const o = parseOpening(records);
    if (o && entries === 0 && opening === undefined) opening = o;
    return true;
  };
  const reader = new TarReader(tar.getReader(), hash, onGlobal);

  try {
    for (let h = await reader.next(); h; h = await reader.next()) {
      if (trailer) {
        throw new CorruptArchiveError(`entry ${JSON.stringify(h.name)} follows the integrity trailer`);
      }
      const name = normName(h.name);
      if (root === undefined) {
        if (opening?.name) root = normName(opening.name);
        else if (options.savedRoot && options.savedRoot.startsWith("/") === name.startsWith("/")) {
          root = normName(options.savedRoot);
        } else root = name;
      }
      const rel = relUnder(name, root);
      if (rel === null) {
        throw new UnsafeArchiveError(
          `refusing entry ${JSON.stringify(h.name)}: it is outside the archive root ${JSON.stringify(root)}`,
        );
      }
      entries++;
      switch (h.typeflag) {
        case TYPE.dir:
          ex.dir(rel, h);
          break;
        case TYPE.file:
        case TYPE.oldFile:
        case TYPE.contiguous:
          await ex.file(rel, h, reader);
          break;
        case TYPE.symlink:
          ex.symlink(rel, h);
          break;
        case TYPE.hardlink: {
          const source = relUnder(normName(h.linkname), root);
          if (source === null) {
            throw new UnsafeArchiveError(
              `refusing hard link ${JSON.stringify(h.name)}: its target ${
                JSON.stringify(h.linkname)
              } is outside the archive root ${JSON.stringify(root)}`,
            );
          }
          ex.hardlink(rel, source, h);
          break;
        }
        case TYPE.char:
        case TYPE.block:
        case TYPE.fifo:
          log?.warn("skipping a device or FIFO entry: not restored", { entry: h.name });
          break;
        default:
          throw new CorruptArchiveError(
            `entry ${JSON.stringify(h.name)} has the unsupported type ${typeName(h.typeflag)}`,
          );
      }
    }
    let verified = false;
    if (trailer) {
      if (trailer.sha256 !== trailer.actual) {
        throw new CorruptArchiveError(
          `integrity check failed: the archive's SHA-256 is ${trailer.actual}, its trailer says ${trailer.sha256}`,
        );
      }
      if (trailer.entries !== trailer.entriesBefore) {
        throw new CorruptArchiveError(
          `integrity check failed: the archive has ${trailer.entriesBefore} entries, its trailer says ${trailer.entries}`,
        );
      }
      verified = true;
    } else if (opening) {
      throw new CorruptArchiveError("the archive ends without its integrity trailer (truncated archive)");
    } else {
      log?.warn("archive has no integrity trailer: restored unverified", { mount: target });
    }
    ex.finishDirs();
    ex.stats.entries = entries;
    if (staged && ex.touched) commit(base, target);
    unregister();
    return { ...ex.stats, verified, staged, target };
  } catch (err) {
    unregister();
    await reader.cancel(err);
    if (staged) {
      try {
        Deno.removeSync(base, { recursive: true });
      } catch (cleanupErr) {
        if (!isNotFound(cleanupErr)) {
          log?.error("could not remove the staging directory", { path: base, error: cleanupErr });
        }
      }
    }
    if (err instanceof TarFormatError) throw new CorruptArchiveError(err.message, { cause: err });
    if (!isFsError(err)) throw err; // our typed errors, and the source stream's own (network, storage)
    throw new Error(
      `restore into ${target} failed${staged ? "" : " (partially extracted in place)"}: ${
        (err as Error)?.message ?? err
      }`,
      { cause: err },
    );
  }
}

/** Moves the staged copy into place, replacing an empty directory, a file or a symlink at the mount. */
function commit(staged: string, target: string): void {
  try {
    Deno.renameSync(staged, target);
  } catch {
    // rename cannot put a directory over a file/symlink (or a file over a directory): clear and retry.
    Deno.removeSync(target);
    Deno.renameSync(staged, target);
  }
}
