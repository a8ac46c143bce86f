/**
 * The records of our two PAX global headers: the one that opens an archive
 * (format version, save-time root) and the integrity trailer that closes it
 * (SHA-256 of every tar byte before the trailer, entry count). GNU tar and the
 * Go plugin ignore global headers, so the archive stays a plain tar for them.
 *
 * @module
 */

/** Base name of both global headers (`<archive root>/pax_global_header`). */
export const GLOBAL_HEADER_BASENAME = "pax_global_header";

/** Our archive format version; an archive with it must end with the trailer. */
export const ARCHIVE_VERSION = "1";

/** Record: archive format version (opening header). */
export const REC_VERSION = "cicache.version";
/** Record: absolute path of the mount at save time (opening header). */
export const REC_ROOT = "cicache.root";
/** Record: the root's entry name as written in the archive (absolute, or relative for `./` mounts). */
export const REC_NAME = "cicache.name";
/** Record: hex SHA-256 of all tar bytes before the trailer header (trailer). */
export const REC_SHA256 = "cicache.sha256";
/** Record: number of entries, global headers not counted (trailer). */
export const REC_ENTRIES = "cicache.entries";

/** What an opening header told us. */
export interface ArchiveInfo {
  version: string;
  /** Absolute save-time root. */
  root?: string;
  /** Root entry name as written. */
  name?: string;
}

/** Reads our opening-header records, or undefined when `records` are someone else's. */
export function parseOpening(records: Record<string, string>): ArchiveInfo | undefined {
  const version = records[REC_VERSION];
  if (version === undefined) return undefined;
  return { version, root: records[REC_ROOT], name: records[REC_NAME] };
}

/** What a trailer carries. */
export interface Trailer {
  sha256: string;
  entries: number;
}

/** Reads trailer records, or undefined when `records` are not a trailer. */
export function parseTrailer(records: Record<string, string>): Trailer | undefined {
  const sha256 = records[REC_SHA256];
  if (sha256 === undefined) return undefined;
  return { sha256: sha256.toLowerCase(), entries: Number(records[REC_ENTRIES] ?? NaN) };
}
