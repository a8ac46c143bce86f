/**
 * Safe extraction of a tar stream into a mount, re-rooted from the archive's
 * save-time root to the restore-time mount, with integrity verification
 * before anything becomes visible (DESIGN §4).
 *
 * Rules:
 * - Re-rooting: the archive root (our opening header's `cicache.name`, else
 *   the `savedRoot` hint from the object's metadata, else the first entry's
 *   name, which is the mount root in Go plugin and GNU tar archives) maps to
 *   the mount's absolute path. The root must be a clean path (no `..`
 *   segment); every entry name and hard-link target goes through
 *   {@link insideRoot} (one rule for all writers), and anything outside the
 *   root is refused with {@link UnsafeArchiveError}.
 * - Staging: the archive is always extracted into a fresh hidden directory
 *   beside the mount (same file system; inside it when the mount is a mount
 *   point), verified, and only then moved into place: renamed as a whole when the mount is missing, else entry by entry
 *   (directories merged, files, links and type changes replaced). A failed
 *   check removes the staging copy and leaves an existing mount untouched.
 * - Nothing is written through a symlink: every parent of an entry must be a
 *   real directory (checked with `lstat`, cached per extraction, keyed by the
 *   folded name when the file system folds case: probed once per restore),
 *   files are created with `O_EXCL` after removing whatever was there. Hard
 *   links must point inside the archive. Symlink entries are created
 *   verbatim (targets not checked): creating a symlink writes nothing
 *   through it, and the move into place never follows one.
 * - Integrity: the SHA-256 of the tar bytes before our trailer and its entry
 *   count must match; truncation or any parse error is a
 *   {@link CorruptArchiveError}. The digest is computed off this thread by
 *   the stream's producer (producer.ts: the zstd decoder worker, or the
 *   hashing worker of plain tar and gzip streams), else here. Only
 *   archives that begin with a PAX global header (ours open with one) are
 *   hashed; a trailer in any other archive is refused as unverifiable.
 *   After the trailer, exactly one repeat of the root directory's entry is
 *   accepted (written so that every tar reader, Python's included, sees a
 *   member after the last global header). Archives without our headers (Go
 *   plugin, GNU tar) restore with `verified: false` and a warning.
 * - Small files whose data is in the input chunk at hand are created in one
 *   call (create-new, write, close; their mode passed only when the umask
 *   would not give it).
 * - Modes always (setuid/setgid/sticky included); mtimes and ownership with
 *   `preserveMetadata`. Directory modes and times are applied last, deepest
 *   first, on the final paths. FIFOs and device nodes are skipped with a
 *   warning.
 *
 * @module
 */
import { posix } from "node:path";
import { createHash, type Hash } from "node:crypto";
import type { Logger } from "../log.ts";
import { CorruptArchiveError, UnsafeArchiveError } from "./errors.ts";
import type { ArchiveStats } from "./pack.ts";
import { insideRoot, pathSegments } from "./paths.ts";
import { TarFormatError, type TarHeader, TarReader, TYPE } from "./tar.ts";
import { type ArchiveInfo, parseOpening, parseTrailer, type Trailer } from "./trailer.ts";
import { producerOf, type StreamProducer } from "./producer.ts";
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
  /**
   * Test seam for case-folding file systems: `"simulate"` makes the
   * extractor fold names itself (as APFS or NTFS resolve them) on a file
   * system that does not; `true`/`false` skip the probe. Default: probe.
   */
  foldNames?: boolean | "simulate";
}

/** What {@link unpackToMount} did. */
export interface UnpackResult extends ArchiveStats {
  /** True when our integrity trailer was present and matched. */
  verified: boolean;
  /** Always true: extracted beside the mount and moved into place after verification. */
  staged: boolean;
  /** Absolute path of the mount. */
  target: string;
}

/** How a case-folding file system compares names (NFC and lower case: APFS also ignores normalization). */
function fold(name: string): string {
  return name.normalize("NFC").toLowerCase();
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

/**
 * Creates the directory `path` when nothing is there: true when it did. Tried before any `lstat`, because
 * extraction goes into a fresh staging directory where almost nothing exists yet, and each `lstat` of a
 * missing path costs a thrown NotFound error (18 µs in a microbenchmark; restoring 100,000 files in 5,000
 * directories took 0.5 s less user CPU without them). `mkdir` never follows a symlink in the last component
 * (it fails with EEXIST), and callers have checked the parents.
 */
function mkdirIfAbsent(path: string, mode?: number): boolean {
  try {
    Deno.mkdirSync(path, mode === undefined ? undefined : { mode });
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return false;
    throw err;
  }
}

function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/**
 * Whether the file system holding `dir` folds case: a probe file is created
 * and looked up under another case (one create, one lstat, one remove).
 */
export function probeCaseFolding(dir: string): boolean {
  const name = `.cicache-Fold-${crypto.randomUUID().slice(0, 8)}`;
  const path = `${dir}/${name}`;
  try {
    Deno.writeFileSync(path, new Uint8Array(0), { createNew: true });
  } catch {
    return false; // cannot probe (read-only parent): assume it does not fold; the extraction itself fails
  }
  try {
    return lstatOrNull(`${dir}/${name.toUpperCase()}`) !== null;
  } finally {
    Deno.removeSync(path);
  }
}

const CREATE_NEW: Deno.WriteFileOptions = { createNew: true };

/** A pending directory mode/time, applied on the final path once everything is in place. */
interface DirMeta {
  rel: string;
  mode: number;
  mtime: number;
  atime?: number;
  uid: number;
  gid: number;
}

/** The filesystem side of one extraction: safe path resolution and entry creation under `base`. */
class Extractor {
  readonly base: string;
  readonly stats: ArchiveStats = { entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0 };
  #dirs = new Set<string>(); // keys of relative dirs known to be real directories
  #dirMeta: DirMeta[] = [];
  #preserve: boolean;
  #umask: number;
  /** The mode a file created without one gets (0o666 minus the umask). */
  #plainMode: number;
  /** The file system folds names: the directory cache is keyed by the folded name. */
  #folds: boolean;
  /** Test seam: fold names on the way to the disk, as a folding file system resolves them. */
  #simulate: boolean;

  constructor(base: string, preserve: boolean, folds: boolean, simulate: boolean) {
    this.base = base;
    this.#preserve = preserve;
    this.#folds = folds || simulate;
    this.#simulate = simulate;
    this.#umask = Deno.umask();
    this.#plainMode = 0o666 & ~this.#umask;
  }

  abs(rel: string): string {
    if (rel === "") return this.base;
    return `${this.base}/${this.#simulate ? fold(rel) : rel}`;
  }

  #key(rel: string): string {
    return this.#folds ? fold(rel) : rel;
  }

  /**
   * Makes sure every directory from the base down to `rel` is a real
   * directory, creating missing ones; a symlink on the way is refused.
   */
  #ensureDir(rel: string, entry: string, create = true): void {
    if (this.#dirs.has(this.#key(rel))) return;
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), entry, create);
    const path = this.abs(rel);
    if (create && mkdirIfAbsent(path)) {
      this.#dirs.add(this.#key(rel));
      return;
    }
    const info = lstatOrNull(path);
    if (info === null) {
      if (!create) {
        throw new CorruptArchiveError(`hard link ${JSON.stringify(entry)}: ${path} does not exist`);
      }
      Deno.mkdirSync(path);
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
    this.#dirs.add(this.#key(rel));
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
    if (info.isDirectory) this.#dirs.delete(this.#key(rel));
  }

  /** Applies a mode exactly (open/mkdir apply the umask and drop nothing else). */
  #needsChmod(mode: number): boolean {
    return (mode & ~0o777) !== 0 || (mode & this.#umask) !== 0;
  }

  dir(rel: string, h: TarHeader): void {
    const path = this.abs(rel);
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    if (!mkdirIfAbsent(path, 0o700)) {
      const info = lstatOrNull(path);
      if (info === null || !info.isDirectory) {
        if (info !== null) this.#clear(path, rel, h.name);
        Deno.mkdirSync(path, { mode: 0o700 });
      }
    }
    this.#dirs.add(this.#key(rel));
    this.#dirMeta.push({ rel, mode: h.mode, mtime: h.mtime, atime: h.atime, uid: h.uid, gid: h.gid });
    this.stats.dirs++;
  }

  async file(rel: string, h: TarHeader, tar: TarReader): Promise<void> {
    const path = this.abs(rel);
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    const mode = h.mode & 0o7777;
    if (!this.#preserve && (mode & ~0o777) === 0) {
      // A file whose data is all in the input chunk at hand (every small file, mostly) takes one call:
      // create (O_EXCL) with its exact mode, write, close. Not for setuid/setgid/sticky modes (a write
      // after the chmod clears them) nor with preserve-metadata (times and owner need the open file).
      const data = h.size === 0 ? new Uint8Array(0) : tar.readWhole();
      if (data) {
        // Created as 0o666 minus the umask, the mode most files have, without `mode`; else Deno sets the
        // exact mode on the open file (one fchmod more).
        const options = mode === this.#plainMode ? CREATE_NEW : { createNew: true, mode };
        try {
          Deno.writeFileSync(path, data, options);
        } catch (err) {
          if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
          this.#clear(path, rel, h.name);
          Deno.writeFileSync(path, data, options);
        }
        this.stats.files++;
        this.stats.bytes += h.size;
        return;
      }
    }
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path, { write: true, createNew: true, mode: mode & 0o777 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      this.#clear(path, rel, h.name);
      file = Deno.openSync(path, { write: true, createNew: true, mode: mode & 0o777 });
    }
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
    this.#dirs.delete(this.#key(rel));
    this.stats.symlinks++;
  }

  hardlink(rel: string, sourceRel: string, h: TarHeader): void {
    const path = this.abs(rel);
    const source = this.abs(sourceRel);
    if (sourceRel === "" || this.#key(sourceRel) === this.#key(rel)) {
      throw new UnsafeArchiveError(
        `refusing hard link ${JSON.stringify(h.name)} to ${JSON.stringify(h.linkname)}`,
      );
    }
    this.#ensureDir(this.#parentOf(sourceRel), h.name, false);
    const info = lstatOrNull(source);
    if (info === null) {
      throw new CorruptArchiveError(
        `hard link ${JSON.stringify(h.name)}: its target ${JSON.stringify(h.linkname)} is not in the archive`,
      );
    }
    if (info.isDirectory) {
      throw new UnsafeArchiveError(`refusing hard link ${JSON.stringify(h.name)} to a directory`);
    }
    if (rel !== "") this.#ensureDir(this.#parentOf(rel), h.name);
    try {
      Deno.linkSync(source, path);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      this.#clear(path, rel, h.name);
      Deno.linkSync(source, path);
    }
    this.stats.hardlinks++;
  }

  #chown(path: string, h: { uid: number; gid: number }): void {
    try {
      Deno.chownSync(path, h.uid, h.gid);
    } catch {
      // Not permitted (not root): ownership stays the extracting user's, as GNU tar does.
    }
  }

  /**
   * Applies directory modes (and times, ownership) deepest and last first, on
   * the tree now at `root` (the mount, after the move into place).
   */
  finishDirs(root: string): void {
    for (let i = this.#dirMeta.length - 1; i >= 0; i--) {
      const d = this.#dirMeta[i];
      const path = d.rel === "" ? root : `${root}/${this.#simulate ? fold(d.rel) : d.rel}`;
      const info = lstatOrNull(path);
      if (info === null || !info.isDirectory) continue; // replaced later in the archive: never follow a symlink
      if (this.#preserve) this.#chown(path, d);
      Deno.chmodSync(path, d.mode);
      if (this.#preserve) Deno.utimeSync(path, d.atime ?? d.mtime, d.mtime);
    }
    this.#dirMeta = [];
  }
}

/**
 * The digest of the tar bytes before the trailer, as a sink of the reader.
 *
 * Which bytes are hashed, and where, is decided on the first header: an
 * archive that does not begin with a PAX global header is none of ours (Go
 * plugin, GNU tar) and is not hashed at all (a trailer in it is refused as
 * unverifiable); ours are hashed by the stream's producer when it offers
 * that ({@link producerOf}: the zstd decoder worker), else here. Here, the
 * reader hands over many small slices (headers, file data); adjacent slices
 * of one input chunk are hashed in one call, which saves most of the
 * per-call cost. Hashing stops once the trailer was reached.
 */
class TarHash {
  #hash: Hash | undefined;
  #mode: "undecided" | "local" | "remote" | "off" = "undecided";
  #remote: StreamProducer | undefined;
  #source: ReadableStream<Uint8Array>;
  #done = false;
  #pending: Uint8Array | undefined;

  constructor(source: ReadableStream<Uint8Array>) {
    this.#source = source;
  }

  update(bytes: Uint8Array): void {
    if (this.#mode === "undecided") this.#decide(bytes);
    if (this.#mode !== "local" || this.#done || bytes.length === 0) return;
    const p = this.#pending;
    if (p && p.buffer === bytes.buffer && p.byteOffset + p.length === bytes.byteOffset) {
      this.#pending = new Uint8Array(p.buffer, p.byteOffset, p.length + bytes.length);
      return;
    }
    this.flush();
    this.#pending = bytes;
  }
  /** The first bytes hashed are the first header block (never a partial one). */
  #decide(first: Uint8Array): void {
    if (first[156] !== TYPE.paxGlobal) {
      this.#mode = "off";
      return;
    }
    this.#remote = producerOf(this.#source);
    this.#mode = this.#remote ? "remote" : "local";
    if (this.#mode === "local") this.#hash = createHash("sha256");
  }

  flush(): void {
    if (this.#pending) this.#hash!.update(this.#pending);
    this.#pending = undefined;
  }

  /**
   * The hex digest of the bytes before the trailer header, whose position
   * the reader gives; null when this archive was not hashed (see the class
   * doc). Call once, when the trailer was read.
   */
  digest(at: { chunkStart: number; head: Uint8Array }): Promise<string | null> {
    const mode = this.#mode;
    this.#mode = "off";
    if (mode === "remote") return this.#remote!.digest(at.chunkStart, at.head);
    if (mode !== "local") return Promise.resolve(null);
    this.flush();
    this.#done = true;
    return Promise.resolve(this.#hash!.digest("hex"));
  }
}

/** What the global headers said: the opening, and the trailer with the digest of the bytes before it. */
interface ExtractState {
  trailer?: Trailer & { actual: Promise<string | null>; entriesBefore: number };
  opening?: ArchiveInfo;
}

/** Everything the stream said about itself once it ended. */
interface Extracted {
  verified: boolean;
  entries: number;
}

/**
 * Reads the whole tar stream and extracts it under the extractor's base,
 * re-rooted and confined; returns once the end-of-archive marker was read
 * and the integrity trailer (if any) matched. Throws on anything else.
 */
async function extractAll(
  reader: TarReader,
  state: ExtractState,
  counter: { entries: number },
  ex: Extractor,
  options: UnpackOptions,
  target: string,
): Promise<Extracted> {
  const log = options.log;
  let root: string | undefined;
  let repeatedRoot = false;
  for (let h = await reader.next(); h; h = await reader.next()) {
    if (root === undefined) root = archiveRoot(h.name, state.opening, options.savedRoot);
    const rel = insideRoot(h.name, root);
    if (rel === null) {
      throw new UnsafeArchiveError(
        `refusing entry ${JSON.stringify(h.name)}: it is outside the archive root ${JSON.stringify(root)}`,
      );
    }
    if (state.trailer) {
      // Our archives repeat the root directory's entry after the trailer, once, for readers that
      // expect a member after every extended header (Python's tarfile). Nothing else may follow.
      if (rel === "" && h.typeflag === TYPE.dir && !repeatedRoot) {
        repeatedRoot = true;
        continue;
      }
      throw new CorruptArchiveError(`entry ${JSON.stringify(h.name)} follows the integrity trailer`);
    }
    counter.entries++;
    await extractEntry(ex, reader, h, rel, root, log);
  }
  const trailer = state.trailer;
  if (trailer) {
    const actual = await trailer.actual;
    if (actual === null) {
      throw new CorruptArchiveError(
        "integrity check failed: the archive has an integrity trailer but does not begin with our opening " +
          "header (its SHA-256 cannot be verified)",
      );
    }
    if (trailer.sha256 !== actual) {
      throw new CorruptArchiveError(
        `integrity check failed: the archive's SHA-256 is ${actual}, its trailer says ${trailer.sha256}`,
      );
    }
    if (trailer.entries !== trailer.entriesBefore) {
      throw new CorruptArchiveError(
        `integrity check failed: the archive has ${trailer.entriesBefore} entries, its trailer says ${trailer.entries}`,
      );
    }
    return { verified: true, entries: counter.entries };
  }
  if (state.opening) {
    throw new CorruptArchiveError("the archive ends without its integrity trailer (truncated archive)");
  }
  log?.warn("archive has no integrity trailer: restored unverified", { mount: target });
  return { verified: false, entries: counter.entries };
}

/**
 * The archive root: our opening header's name, else the object's recorded
 * root (when it is as absolute as the entries), else the first entry's name.
 * It must be a clean path: a `..` segment refuses the whole archive.
 */
function archiveRoot(firstName: string, opening: ArchiveInfo | undefined, savedRoot?: string): string {
  let root = firstName;
  let from = "its first entry";
  if (opening?.name) {
    root = opening.name;
    from = "its opening header";
  } else if (savedRoot && savedRoot.startsWith("/") === firstName.startsWith("/")) {
    root = savedRoot;
    from = "the object's cicache_root metadata";
  }
  if (pathSegments(root) === null) {
    throw new UnsafeArchiveError(
      `refusing the archive: its root ${JSON.stringify(root)} (from ${from}) has a ".." segment`,
    );
  }
  return root;
}

/** Creates one entry (already confined to `rel`) under the extractor's base. */
async function extractEntry(
  ex: Extractor,
  reader: TarReader,
  h: TarHeader,
  rel: string,
  root: string,
  log?: Logger,
): Promise<void> {
  switch (h.typeflag) {
    case TYPE.dir:
      return ex.dir(rel, h);
    case TYPE.file:
    case TYPE.oldFile:
    case TYPE.contiguous:
      return await ex.file(rel, h, reader);
    case TYPE.symlink:
      return ex.symlink(rel, h);
    case TYPE.hardlink: {
      const source = insideRoot(h.linkname, root);
      if (source === null) {
        throw new UnsafeArchiveError(
          `refusing hard link ${JSON.stringify(h.name)}: its target ${
            JSON.stringify(h.linkname)
          } is outside the archive root ${JSON.stringify(root)}`,
        );
      }
      return ex.hardlink(rel, source, h);
    }
    case TYPE.char:
    case TYPE.block:
    case TYPE.fifo:
      log?.warn("skipping a device or FIFO entry: not restored", { entry: h.name });
      return;
    default:
      throw new CorruptArchiveError(
        `entry ${JSON.stringify(h.name)} has the unsupported type ${typeName(h.typeflag)}`,
      );
  }
}

/**
 * Extracts an uncompressed tar stream into the mount, safely (see the module
 * doc for the rules). Resolves with what was extracted; rejects with
 * {@link CorruptArchiveError} (damaged, truncated or unverifiable),
 * {@link UnsafeArchiveError} (an entry would escape the mount or write
 * through a symlink), or the filesystem/stream error. A rejection before the
 * move into place leaves the mount exactly as it was and no staging behind.
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
  const staging = stagingPath(target, log);
  const simulate = options.foldNames === "simulate";
  const folds = typeof options.foldNames === "boolean"
    ? options.foldNames
    : !simulate && probeCaseFolding(posix.dirname(staging));
  const ex = new Extractor(staging, options.preserveMetadata ?? false, folds, simulate);
  // A cancelled build (SIGINT/SIGTERM) removes the staging directory before it exits.
  const unregister = onCancel(`staging directory ${staging} removed`, () => removeStaging(staging, log));

  const hash = new TarHash(tar);
  const state: ExtractState = {};
  const counter = { entries: 0 };
  const onGlobal = (records: Record<string, string>): boolean => {
    const t = parseTrailer(records);
    if (t) {
      if (state.trailer) throw new CorruptArchiveError("the archive has two integrity trailers");
      const actual = hash.digest(reader.headerPosition());
      actual.catch(() => {}); // awaited at the end; an earlier failure must not leave it unhandled
      state.trailer = { ...t, actual, entriesBefore: counter.entries };
      return false;
    }
    const o = parseOpening(records);
    if (o && counter.entries === 0 && state.opening === undefined) state.opening = o;
    return true;
  };
  // The zstd decoder takes its output buffers back once extracted (see producer.ts).
  let producer: StreamProducer | undefined | null = null;
  const recycle = (chunk: Uint8Array) => {
    if (producer === null) producer = producerOf(tar);
    producer?.recycle(chunk);
  };
  const reader = new TarReader(tar.getReader(), hash, onGlobal, recycle);

  let extracted: Extracted;
  try {
    extracted = await extractAll(reader, state, counter, ex, options, target);
  } catch (err) {
    unregister();
    await reader.cancel(err);
    removeStaging(staging, log);
    if (err instanceof TarFormatError) throw new CorruptArchiveError(err.message, { cause: err });
    if (!isFsError(err)) throw err; // our typed errors, and the source stream's own (network, storage)
    throw new Error(
      `restore into ${target} failed (the mount is unchanged): ${(err as Error)?.message ?? err}`,
      {
        cause: err,
      },
    );
  }
  try {
    moveIntoPlace(staging, target);
    ex.finishDirs(target);
  } catch (err) {
    unregister();
    removeStaging(staging, log);
    throw new Error(
      `restore into ${target} failed while moving the verified entries into place (the mount may be partly ` +
        `updated): ${(err as Error)?.message ?? err}`,
      { cause: err },
    );
  }
  unregister();
  ex.stats.entries = extracted.entries;
  return { ...ex.stats, verified: extracted.verified, staged: true, target };
}

/**
 * Where to extract before the move into place: a fresh hidden directory on
 * the mount's file system (renames cannot cross file systems). Beside the
 * mount, normally; inside it when the mount is an existing directory on
 * another device than its parent (a volume mounted there), since nothing
 * can be renamed into a mount point from outside.
 */
function stagingPath(target: string, log?: Logger): string {
  const id = crypto.randomUUID().slice(0, 8);
  const parent = posix.dirname(target);
  Deno.mkdirSync(parent, { recursive: true });
  const existing = lstatOrNull(target);
  if (existing?.isDirectory && existing.dev !== Deno.lstatSync(parent).dev) {
    sweepStale(target, ".cicache-staging-", log);
    return `${target}/.cicache-staging-${id}`;
  }
  const prefix = `.${posix.basename(target)}.cicache-`;
  sweepStale(parent, prefix, log);
  return posix.join(parent, prefix + id);
}

/** Staging directories older than this are leftovers of a killed restore. */
const STALE_STAGING_MS = 60 * 60 * 1000;

/** Removes staging directories named `<prefix>…` in `dir` that a killed restore left behind (over an hour old). */
function sweepStale(dir: string, prefix: string, log?: Logger): void {
  const now = Date.now();
  for (const e of Deno.readDirSync(dir)) {
    if (!e.isDirectory || !e.name.startsWith(prefix)) continue;
    const path = `${dir}/${e.name}`;
    const mtime = lstatOrNull(path)?.mtime?.getTime() ?? now;
    if (now - mtime < STALE_STAGING_MS) continue;
    log?.warn("removing a staging directory left by an interrupted restore", { path });
    removeStaging(path, log);
  }
}

function removeStaging(staging: string, log?: Logger): void {
  try {
    Deno.removeSync(staging, { recursive: true });
  } catch (err) {
    if (!isNotFound(err)) log?.error("could not remove the staging directory", { path: staging, error: err });
  }
}

/**
 * Moves the verified staging copy into place: renamed as a whole when
 * nothing is at the mount, merged entry by entry into an existing directory,
 * or replacing whatever else is there. Never follows a symlink.
 */
function moveIntoPlace(staged: string, target: string): void {
  const s = lstatOrNull(staged);
  if (s === null) return; // an archive without entries
  const t = lstatOrNull(target);
  if (t === null) return Deno.renameSync(staged, target);
  if (posix.dirname(staged) === target && !s.isDirectory) {
    throw new Error(
      `${target} is a mount point (a directory on its own device) and the archive holds a file`,
    );
  }
  if (s.isDirectory && t.isDirectory) {
    mergeDir(staged, target);
    Deno.removeSync(staged, { recursive: true });
    return;
  }
  replace(staged, target, t);
}

/** Moves every entry of `src` into the existing directory `dst`: directories merged, the rest replaced. */
function mergeDir(src: string, dst: string): void {
  for (const e of Deno.readDirSync(src)) {
    const from = `${src}/${e.name}`;
    const to = `${dst}/${e.name}`;
    const existing = lstatOrNull(to);
    if (existing === null) Deno.renameSync(from, to);
    else if (e.isDirectory && existing.isDirectory) mergeDir(from, to);
    else replace(from, to, existing);
  }
}

/** Puts `from` at `to`, where `existing` is: a rename, after moving a directory (or anything a rename cannot replace) aside. */
function replace(from: string, to: string, existing: Deno.FileInfo): void {
  if (!existing.isDirectory) {
    try {
      return Deno.renameSync(from, to); // atomic over a file or symlink
    } catch {
      Deno.removeSync(to); // a directory cannot be renamed over a file
      return Deno.renameSync(from, to);
    }
  }
  const aside = `${to}.cicache-old-${crypto.randomUUID().slice(0, 8)}`;
  Deno.renameSync(to, aside);
  Deno.renameSync(from, to);
  Deno.removeSync(aside, { recursive: true });
}
