/**
 * The errors the archive modules throw, in one place so that compression,
 * tar reading and extraction share them (re-exported by `unpack.ts`).
 *
 * @module
 */

/**
 * The archive is damaged: the integrity trailer does not match, the stream
 * is truncated, or the tar, gzip or zstd decoder rejected it. The cache layer
 * reports this as a failure, never a miss; the mount is left as it was
 * (extraction is staged and verified first), and the next save overwrites
 * the object.
 */
export class CorruptArchiveError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CorruptArchiveError";
  }
}

/**
 * An entry would land outside the mount, or be written through a symlink, or
 * hard-link to something outside the mount. Nothing of it was written; the
 * archive is refused as a whole.
 */
export class UnsafeArchiveError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UnsafeArchiveError";
  }
}

/** The mount to archive does not exist (its `lstat` failed). */
export class MountNotFoundError extends Error {
  /** The absolute path that was looked up. */
  readonly path: string;
  constructor(path: string, options?: ErrorOptions) {
    super(
      `mount ${path} does not exist: nothing to archive (check the mount path and the working directory)`,
      options,
    );
    this.name = "MountNotFoundError";
    this.path = path;
  }
}
