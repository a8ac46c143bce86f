/**
 * Packing a mount into a tar stream, the way the Go plugin names entries (so
 * it can restore our archives) plus our integrity trailer.
 *
 * The walk is lexical and root first (like Go's `filepath.Walk`) and never
 * follows symlinks. Entry names are absolute (leading `/` kept) unless the
 * mount starts with `./`, then they are the cleaned relative path. The stream
 * starts with a PAX global header naming the save-time root and ends with a
 * second one carrying the SHA-256 of every byte before it and the entry
 * count; both are named `<root>/pax_global_header` (see DESIGN §4). After the
 * trailer, a directory root's own entry is repeated, so that readers which
 * expect a member after every extended header (Python's tarfile) read the
 * archive too; a file mount's archive ends with the trailer.
 *
 * The producer fills 1 MiB chunks: headers and file data are written straight
 * into the chunk (a file's data read in place, never whole in memory), with
 * no per-entry stream objects. On Linux a regular file is opened, described
 * and read through libc ({@link libcFiles}: four system calls, no
 * allocation); elsewhere through Deno's file API, a small file (up to 4 KiB)
 * read whole in one call after its `lstat`. The archive is the same either
 * way.
 *
 * @module
 */
import { posix } from "node:path";
import { createHash } from "node:crypto";
import type { Logger } from "../log.ts";
import { MountNotFoundError } from "./errors.ts";
import { type DirListing, ERRNO, type LibcFiles, libcFiles, type ReadableFile } from "./libc_files.ts";
import {
  END_OF_ARCHIVE,
  globalHeader,
  type HeaderFields,
  headerSize,
  padding,
  TYPE,
  writeHeader,
} from "./tar.ts";
import {
  ARCHIVE_VERSION,
  GLOBAL_HEADER_BASENAME,
  REC_ENTRIES,
  REC_NAME,
  REC_ROOT,
  REC_SHA256,
  REC_VERSION,
} from "./trailer.ts";

export { MountNotFoundError };

/** What to pack. */
export interface PackOptions {
  /** The mount as configured, after `~`/`$VAR` expansion: `node_modules`, `./node_modules`, `/root/.m2`. */
  mount: string;
  /** Resolves relative mounts (default `Deno.cwd()`). */
  cwd?: string;
  /** Leave symlinks out (the `skip-symlinks` setting). */
  skipSymlinks?: boolean;
  /** Store sub-second mtimes (PAX) and uid/gid/uname/gname (the `preserve-metadata` setting). */
  preserveMetadata?: boolean;
  /** Receives warnings (skipped sockets, FIFOs and devices; files that changed while being read). */
  log?: Logger;
  /**
   * Paths (absolute) to leave out, with everything below them: the exclude
   * patterns. Never asked about the mount itself.
   */
  exclude?: (path: string) => boolean;
  /**
   * Read regular files through libc where this process can (Linux, FFI
   * permission; the default), or `false`: always Deno's file API. The
   * archive is the same either way; tests compare the two.
   */
  libc?: boolean;
}

/** The fields of a file's status that go into its header (a `Deno.FileInfo` or libc's `fstat`). */
type EntryInfo = Pick<Deno.FileInfo, "mode" | "mtime" | "uid" | "gid" | "nlink" | "ino" | "dev">;

/** Counts of what an archive holds. */
export interface ArchiveStats {
  /** All entries (not counting the global headers). */
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Bytes of regular file data. */
  bytes: number;
}

/** Output chunk size. */
const CHUNK = 1 << 20;
/**
 * Files up to this size are read whole in one call (and checked for growth: a warning); larger ones are
 * streamed through a file handle (and checked for shrinking only).
 */
const SMALL_FILE = 64 << 10;
/** Released chunk buffers kept for reuse. */
const MAX_SPARE = 4;

/** Compares strings by UTF-8 byte order (what Go's `sort.Strings` gives), not UTF-16 units. */
function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (U+10000 and up) sort after U+E000–U+FFFF in UTF-8; lift them above.
    if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
    return x - y;
  }
  return a.length - b.length;
}

/** Maps ids to names from an `/etc/passwd`-style file (empty when unreadable). */
function readIdNames(path: string): Map<number, string> {
  const map = new Map<number, string>();
  try {
    for (const line of Deno.readTextFileSync(path).split("\n")) {
      const f = line.split(":");
      if (f.length >= 3 && !map.has(Number(f[2]))) map.set(Number(f[2]), f[0]);
    }
  } catch {
    // no name lookup: the numeric ids are still stored
  }
  return map;
}

/** The entry name and absolute root of a mount, as the Go plugin derives them (A§2.3). */
export function archiveRoot(
  mount: string,
  cwd: string,
): { root: string; rootName: string; relative: boolean } {
  const root = posix.resolve(cwd, mount);
  const relative = mount.startsWith("./");
  let rootName = root;
  if (relative) {
    rootName = posix.normalize(mount);
    if (rootName.length > 1 && rootName.endsWith("/")) rootName = rootName.slice(0, -1);
  }
  return { root, rootName, relative };
}

/** The name of both global headers: `<root name>/pax_global_header`. */
export function globalHeaderName(rootName: string): string {
  if (rootName === "/") return `/${GLOBAL_HEADER_BASENAME}`;
  if (rootName === ".") return GLOBAL_HEADER_BASENAME;
  return `${rootName}/${GLOBAL_HEADER_BASENAME}`;
}

function childName(parent: string, child: string): string {
  if (parent === ".") return child;
  if (parent === "/") return `/${child}`;
  return `${parent}/${child}`;
}

/** A regular file whose data is being archived. */
interface OpenFile {
  path: string;
  file: ReadableFile;
  /** The listed size (what the header says). */
  size: number;
  /** Data bytes still to copy. */
  left: number;
  /** The file ended early: the rest is zero-filled. */
  shrank: boolean;
}

interface DirFrame {
  path: string;
  name: string;
  /** Child names in archive order. */
  children: string[];
  /** Whether the listing says the child is a regular file (then no `lstat` is needed). */
  isFile: boolean[];
  next: number;
  /** The open directory its files are opened relative to (libc), else -1. */
  fd: number;
  /** The directory's identity as walked (Deno's file API: checked again before each of its files is read). */
  id: FileId;
}

/** Device and inode of a file (null where the platform has none: Windows). */
interface FileId {
  dev: number | null;
  ino: number | null;
}

/** Whether `now` is the same file as `then` (true when the platform gives no inode numbers). */
function sameFile(then: FileId, now: FileId): boolean {
  return then.ino === null || now.ino === null || (then.ino === now.ino && then.dev === now.dev);
}

/**
 * Walks the mount and produces its uncompressed tar stream, ending with the
 * integrity trailer. `stats` resolves when the stream is complete. Throws
 * {@link MountNotFoundError} right away when the mount does not exist.
 *
 * @example
 * ```ts
 * const { stream, stats, root } = pack({ mount: "node_modules", cwd: "/harness" });
 * await stream.pipeThrough(compressStream("zstd", -1)).pipeTo(destination);
 * console.log(root, (await stats).files); // "/harness/node_modules" 1234
 * ```
 */
export function pack(options: PackOptions): {
  stream: ReadableStream<Uint8Array>;
  stats: Promise<ArchiveStats>;
  root: string;
  /**
   * Hands a chunk of `stream` back once the consumer is completely done with
   * it (written out or copied, no reference kept anywhere), so its memory is
   * reused for a later chunk instead of allocating fresh pages. Optional: a
   * consumer that never calls it just gets a new buffer per chunk. Chunks
   * not from this stream, and repeated releases, are ignored.
   */
  release: (chunk: Uint8Array) => void;
} {
  const cwd = options.cwd ?? Deno.cwd();
  const { root, rootName } = archiveRoot(options.mount, cwd);
  let rootInfo: Deno.FileInfo;
  try {
    rootInfo = Deno.lstatSync(root);
  } catch (err) {
    throw new MountNotFoundError(root, { cause: err });
  }
  const preserve = options.preserveMetadata ?? false;
  const log = options.log;
  const libc: LibcFiles | undefined = options.libc === false ? undefined : libcFiles();
  const stats: ArchiveStats = { entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0 };
  const hash = createHash("sha256");
  const links = new Map<string, string>();
  const stack: DirFrame[] = [];
  let users: Map<number, string> | undefined;
  let groups: Map<number, string> | undefined;
  let started = false;
  let finished = false;
  let out = new Uint8Array(CHUNK);
  const probeByte = new Uint8Array(1);
  let pos = 0;
  let controller!: ReadableStreamDefaultController<Uint8Array>;

  let resolveStats!: (s: ArchiveStats) => void;
  let rejectStats!: (e: unknown) => void;
  const statsPromise = new Promise<ArchiveStats>((res, rej) => [resolveStats, rejectStats] = [res, rej]);
  statsPromise.catch(() => {}); // the stream carries the error; do not crash when nobody awaits stats

  /** Chunk buffers handed back through `release`, ready for reuse. */
  const spare: Uint8Array<ArrayBuffer>[] = [];
  /** Buffers of chunks enqueued and not released yet (a released buffer is taken back once). */
  const issued = new WeakSet<ArrayBufferLike>();

  const nextBuffer = (): Uint8Array<ArrayBuffer> => {
    // A reused buffer keeps its old bytes: headers, padding and zero-filled gaps clear their own region.
    return spare.pop() ?? new Uint8Array(CHUNK);
  };

  const emit = (chunk: Uint8Array) => {
    issued.add(chunk.buffer);
    controller.enqueue(chunk);
  };

  const flush = () => {
    if (pos === 0) return;
    const chunk = pos === out.length ? out : out.subarray(0, pos);
    hash.update(chunk);
    emit(chunk);
    out = nextBuffer();
    pos = 0;
  };

  const put = (bytes: Uint8Array) => {
    let off = 0;
    while (off < bytes.length) {
      if (pos === out.length) flush();
      const n = Math.min(bytes.length - off, out.length - pos);
      out.set(bytes.subarray(off, off + n), pos);
      pos += n;
      off += n;
    }
  };

  const header = (f: HeaderFields) => {
    const size = headerSize(f);
    if (out.length - pos < size) flush();
    if (size > out.length) {
      const buf = new Uint8Array(size);
      writeHeader(buf, 0, f);
      put(buf);
    } else {
      out.fill(0, pos, pos + size);
      pos += writeHeader(out, pos, f);
    }
  };

  const fields = (
    name: string,
    typeflag: number,
    info: EntryInfo,
    size: number,
    linkname = "",
  ): HeaderFields => {
    const ms = info.mtime?.getTime() ?? 0;
    const f: HeaderFields = {
      name,
      typeflag,
      mode: (info.mode ?? 0o644) & 0o7777,
      size,
      mtime: preserve ? ms / 1000 : Math.floor(ms / 1000),
      linkname,
      paxTime: preserve,
    };
    if (preserve) {
      users ??= readIdNames("/etc/passwd");
      groups ??= readIdNames("/etc/group");
      f.uid = info.uid ?? 0;
      f.gid = info.gid ?? 0;
      f.uname = users.get(f.uid) ?? "";
      f.gname = groups.get(f.gid) ?? "";
    }
    return f;
  };

  /**
   * A listed entry that is not there when opened: removed during the walk
   * (nothing to say), or listed by a name that is not valid UTF-8, which the
   * listing turned into U+FFFD and which cannot be stored in a tar entry
   * name: say so instead of leaving it out silently.
   */
  const missing = (path: string): void => {
    if (path.includes("\uFFFD")) {
      log?.warn("skipping an entry whose name is not valid UTF-8 (tar entry names are UTF-8)", { path });
    }
  };

  /** The regular file whose data is being copied (it may span several chunks, so several pulls). */
  let current: OpenFile | undefined;

  /**
   * Copies the current file's data into the output until it is complete or
   * the chunk is full (then it returns after the flush; the next pull goes
   * on). A file that shrank is zero-filled to its listed size. Small files
   * (up to {@link SMALL_FILE}) are checked for growth too, by asking for one
   * byte more than listed where the chunk has room for it (no extra system
   * call), else with a one-byte read.
   */
  const copyFile = (cur: OpenFile) => {
    const small = cur.size <= SMALL_FILE;
    while (cur.left > 0) {
      if (pos === out.length) return flush();
      const want = Math.min(cur.left, out.length - pos);
      if (cur.shrank) {
        out.fill(0, pos, pos + want);
        pos += want;
        cur.left -= want;
        continue;
      }
      const probe = small && want === cur.left && pos + want < out.length ? 1 : 0;
      const n = cur.file.readSync(out.subarray(pos, pos + want + probe));
      if (n === null || n === 0) {
        if (small) {
          log?.warn("file changed size while being archived; stored at its listed size", {
            path: cur.path,
            listed: cur.size,
            read: cur.size - cur.left,
          });
        } else {
          log?.warn("file shrank while being archived; padded with zeros", {
            path: cur.path,
            expected: cur.size,
          });
        }
        cur.shrank = true;
        continue;
      }
      if (n > want) {
        // the probe byte: the file grew (the padding after the data overwrites it)
        pos += want;
        cur.left = 0;
        grew(cur);
        break;
      }
      pos += n;
      cur.left -= n;
      if (cur.left === 0 && small && !cur.shrank && pos === out.length && cur.size > 0) {
        // no room for the probe byte in the chunk: check for growth separately
        const extra = cur.file.readSync(probeByte);
        if (extra !== null && extra > 0) grew(cur);
      }
    }
    current = undefined;
    cur.file.close();
    padTo(cur.size);
    stats.files++;
    stats.bytes += cur.size;
    stats.entries++;
  };

  const grew = (cur: OpenFile) => {
    let read = cur.size + 1;
    try {
      read = Math.max(read, cur.file.statSync().size);
    } catch { /* the listed size and "more" is all we know */ }
    log?.warn("file changed size while being archived; stored at its listed size", {
      path: cur.path,
      listed: cur.size,
      read,
    });
  };

  /** {@link copyFile} with errors naming the file (which is then closed). */
  const continueFile = (cur: OpenFile) => {
    try {
      copyFile(cur);
    } catch (err) {
      current = undefined;
      try {
        cur.file.close();
      } catch { /* already closed */ }
      throw new Error(`archive: cannot read ${cur.path}: ${(err as Error).message}`, { cause: err });
    }
  };

  /**
   * For a file with more than one link: writes a hardlink entry and returns
   * true when another name of it was archived already, else remembers this
   * name as its first.
   */
  const linkedBefore = (name: string, info: EntryInfo): boolean => {
    if (info.nlink === null || info.nlink <= 1 || info.ino === null) return false;
    const key = `${info.dev}:${info.ino}`;
    const first = links.get(key);
    if (first === undefined) {
      links.set(key, name);
      return false;
    }
    header(fields(name, TYPE.hardlink, info, 0, first));
    stats.hardlinks++;
    stats.entries++;
    return true;
  };

  /**
   * Starts archiving the regular file at `path`: opened, then described by
   * `fstat` of the open file (the header matches the bytes read); its data
   * follows through {@link continueFile}. Returns false when the path turned
   * out not to be a regular file (replaced during the walk).
   *
   * Deno's file API opens by path and follows symlinks, so a file (or one of
   * its parent directories) swapped for a symlink during the walk could lead
   * the read outside the mount. There, the open file must be the one `lstat`
   * listed (same device and inode), and its directory must still be the one
   * being walked (`lstat` of the directory path after the open: a swapped
   * ancestor changes what it resolves to); else the file is left out with a
   * warning. (A swap undone within microseconds between those calls can
   * still slip through: only the libc path, which opens relative to the
   * directory's descriptor without following links, closes it entirely.)
   */
  const visitFile = (
    path: string,
    name: string,
    listed?: Deno.FileInfo,
    at?: DirFrame,
    child?: string,
  ): boolean => {
    if (libc) return visitFileLibc(libc, path, name, at?.fd ?? -1, child);
    let stat = listed;
    if (!stat) {
      try {
        stat = Deno.lstatSync(path);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          missing(path); // vanished during the walk
          return true;
        }
        throw new Error(`archive: cannot stat ${path}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!stat.isFile) return false;
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path, { read: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return true; // vanished during the walk
      throw new Error(`archive: cannot open ${path}: ${(err as Error).message}`, { cause: err });
    }
    const listedAs = stat;
    return archiveOpenFile(path, name, file, () => {
      const info = file.statSync();
      if (!sameFile(listedAs, info) || (at && !stillDir(at.path, at.id))) return { ...info, isFile: false };
      return info;
    });
  };

  /** Whether `path` is still the directory `id` (Deno's file API, see {@link visitFile}). */
  const stillDir = (path: string, id: FileId): boolean => {
    try {
      const now = Deno.lstatSync(path);
      return now.isDirectory && sameFile(id, now);
    } catch {
      return false;
    }
  };

  /**
   * {@link visitFile} through libc: the file opened (relative to its open
   * directory `dirFd`, when given) without following a symlink or blocking
   * on a FIFO, then described by `fstat` of the open file, its data read
   * straight into the chunk. A listing's `lstat` is not needed. Returns
   * false when the path is not a regular file (any more).
   */
  const visitFileLibc = (
    libc: LibcFiles,
    path: string,
    name: string,
    dirFd: number,
    child?: string,
  ): boolean => {
    const file = dirFd >= 0 && child !== undefined ? libc.open(child, dirFd) : libc.open(path);
    if (typeof file === "number") {
      if (file === ERRNO.ENOENT) {
        missing(path); // vanished during the walk
        return true;
      }
      if (file === ERRNO.ELOOP || file === ERRNO.ENXIO) return false; // a symlink or a socket now
      throw new Error(`archive: cannot open ${path}: ${libc.error(file).message}`);
    }
    return archiveOpenFile(path, name, file, () => file.stat());
  };

  /**
   * Describes an open file (`fstat`, so the header matches the bytes read)
   * and, when it is a regular file, writes its header (or a hardlink entry)
   * and copies its data. Returns false, the file closed, when it is not a
   * regular file (replaced during the walk).
   */
  const archiveOpenFile = (
    path: string,
    name: string,
    file: ReadableFile,
    fstat: () => EntryInfo & { size: number; isFile: boolean },
  ): boolean => {
    let info;
    try {
      info = fstat();
    } catch (err) {
      file.close();
      throw new Error(`archive: cannot stat ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (!info.isFile) {
      file.close();
      return false;
    }
    if (linkedBefore(name, info)) {
      file.close();
      return true;
    }
    try {
      header(fields(name, TYPE.file, info, info.size));
    } catch (err) {
      file.close();
      throw err;
    }
    const cur = { path, file, size: info.size, left: info.size, shrank: false };
    current = cur;
    continueFile(cur);
    return true;
  };

  const padTo = (size: number) => {
    const p = padding(size);
    if (out.length - pos < p) {
      put(new Uint8Array(p));
    } else {
      out.fill(0, pos, pos + p);
      pos += p;
    }
  };

  /** Archives the entry at `path` (described by `lstat` as `info`), a child of the directory `at` walks. */
  const visit = (path: string, name: string, info: Deno.FileInfo, at?: DirFrame) => {
    if (info.isSymlink) {
      if (options.skipSymlinks) return;
      let target: string;
      try {
        target = Deno.readLinkSync(path);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return; // vanished during the walk
        throw new Error(`archive: cannot read the symlink ${path}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      header(fields(name, TYPE.symlink, info, 0, target));
      stats.symlinks++;
      stats.entries++;
      return;
    }
    if (info.isDirectory) {
      const listing = listDir(path, info);
      if (!listing) return;
      const { names, isFile, fd } = listing;
      const order = names.map((_, i) => i).sort((a, b) => compareNames(names[a], names[b]));
      try {
        header(fields(name, TYPE.dir, info, 0));
      } catch (err) {
        if (fd >= 0) libc?.close(fd);
        throw err;
      }
      stats.dirs++;
      stats.entries++;
      stack.push({
        path,
        name,
        children: order.map((i) => names[i]),
        isFile: order.map((i) => isFile[i]),
        next: 0,
        fd,
        id: { dev: info.dev, ino: info.ino },
      });
      return;
    }
    if (info.isFile) {
      if (!visitFile(path, name, info, at)) {
        log?.warn("skipping a file that changed type while being archived", { path });
      }
      return;
    }
    const kind = info.isSocket
      ? "socket"
      : info.isFifo
      ? "FIFO"
      : info.isCharDevice || info.isBlockDevice
      ? "device"
      : "special file";
    log?.warn(`skipping a ${kind}: only files, directories and links are cached`, { path });
  };

  /**
   * Lists the directory at `path`: through libc (`getdents64` on the
   * directory opened without following a symlink; the descriptor stays open
   * for its files), else with `readDirSync`. Undefined when it is gone or is
   * no directory any more (then it is left out, with a warning).
   */
  const listDir = (path: string, listed: FileId): (DirListing & { fd: number }) | undefined => {
    if (!libc) {
      let entries: Deno.DirEntry[];
      try {
        entries = Array.from(Deno.readDirSync(path));
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          missing(path);
          return undefined;
        }
        throw new Error(`archive: cannot list the directory ${path}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      // readDirSync follows a symlink: the listing counts only if the path is still the directory lstat saw.
      if (!stillDir(path, listed)) {
        log?.warn("skipping a directory that changed type while being archived", { path });
        return undefined;
      }
      return { names: entries.map((e) => e.name), isFile: entries.map((e) => e.isFile), fd: -1 };
    }
    const fd = libc.openDir(path);
    if (fd < 0) {
      if (-fd === ERRNO.ENOENT) {
        missing(path);
        return undefined;
      }
      if (-fd === ERRNO.ELOOP || -fd === ERRNO.ENOTDIR) {
        log?.warn("skipping a directory that changed type while being archived", { path });
        return undefined;
      }
      throw new Error(`archive: cannot list the directory ${path}: ${libc.error(-fd).message}`);
    }
    try {
      return { ...libc.readDir(fd), fd };
    } catch (err) {
      libc.close(fd);
      throw new Error(`archive: cannot list the directory ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  };

  /** Closes what the walk holds open (the current file, the directories on the stack). */
  const closeAll = () => {
    try {
      current?.file.close();
    } catch { /* already closed */ }
    current = undefined;
    for (const frame of stack.splice(0)) if (frame.fd >= 0) libc?.close(frame.fd);
  };

  const lstatAndVisit = (path: string, name: string, at: DirFrame) => {
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return missing(path); // removed during the walk
      throw new Error(`archive: cannot stat ${path}: ${(err as Error).message}`, { cause: err });
    }
    visit(path, name, info, at);
  };

  const finish = () => {
    const trailerName = globalHeaderName(rootName);
    flush();
    const digest = hash.digest("hex");
    put(globalHeader(trailerName, { [REC_SHA256]: digest, [REC_ENTRIES]: String(stats.entries) }));
    if (rootInfo.isDirectory) {
      // Every reader must find a member after the trailer's global header (Python's tarfile fails
      // on "end of file header" otherwise): the root directory's own entry again, which every
      // extractor applies harmlessly and ours accepts exactly once after the trailer.
      const f = fields(rootName, TYPE.dir, rootInfo, 0);
      const buf = new Uint8Array(headerSize(f));
      writeHeader(buf, 0, f);
      put(buf);
    }
    put(END_OF_ARCHIVE);
    // The trailer, the repeated root entry and the end blocks are not part of the hashed bytes.
    emit(out.subarray(0, pos));
    pos = 0;
    finished = true;
    controller.close();
    resolveStats({ ...stats });
  };

  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    pull() {
      try {
        if (!started) {
          started = true;
          put(globalHeader(globalHeaderName(rootName), {
            [REC_VERSION]: ARCHIVE_VERSION,
            [REC_ROOT]: root,
            [REC_NAME]: rootName,
          }));
          visit(root, rootName, rootInfo);
        }
        // Produce one chunk per pull: bounded work between event-loop turns.
        const startChunk = out;
        while (!finished && out === startChunk) {
          if (current) {
            continueFile(current);
            continue;
          }
          const top = stack[stack.length - 1];
          if (!top) {
            finish();
            return;
          }
          if (top.next >= top.children.length) {
            stack.pop();
            if (top.fd >= 0) libc?.close(top.fd);
            continue;
          }
          const i = top.next++;
          const child = top.children[i];
          const path = `${top.path === "/" ? "" : top.path}/${child}`;
          if (options.exclude?.(path)) continue;
          const name = childName(top.name, child);
          if (top.isFile[i] && visitFile(path, name, undefined, top, child)) continue;
          lstatAndVisit(path, name, top);
        }
      } catch (err) {
        closeAll();
        rejectStats(err);
        throw err;
      }
    },
    cancel(reason) {
      closeAll();
      rejectStats(reason ?? new Error("archive stream cancelled"));
    },
  }, { highWaterMark: 1 });

  const release = (chunk: Uint8Array) => {
    const buf = chunk.buffer;
    if (!issued.has(buf) || buf.byteLength !== CHUNK || spare.length >= MAX_SPARE) return;
    issued.delete(buf);
    spare.push(new Uint8Array(buf as ArrayBuffer));
  };

  return { stream, stats: statsPromise, root, release };
}
