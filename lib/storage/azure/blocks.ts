/**
 * Azure block blob sizes shared by the SDK backend and the fetch backend:
 * the service's block limits, the block size rule (grown to fit the
 * maximum object size, doubling as the block budget runs out), the block
 * ids and the download range size. Loads no SDK code.
 *
 * @module
 */

const MiB = 1024 * 1024;
/** Azure's limit on blocks in one block blob. */
export const AZURE_MAX_BLOCKS = 50_000;
/** Azure's limit on one block (4000 MiB). */
export const AZURE_MAX_BLOCK_SIZE = 4000 * MiB;

/**
 * Largest default download range: 8 MiB ranges read as fast as 16 MiB ones, and with `concurrency`
 * of them in flight plus the one being consumed they hold half the memory.
 */
export const DOWNLOAD_RANGE_SIZE = 8 * MiB;

/** Access tiers the backend accepts. */
export type AzureAccessTier = "Hot" | "Cool" | "Cold";

/**
 * The first block size of an upload: at least `requested`, grown (to a
 * whole MiB, at most 4000 MiB) so that `maxBlocks` blocks hold
 * `maxObjectSize`, like S3's part size.
 *
 * @example
 * ```ts
 * blockSizeFor(16 * 2 ** 20, 51200 * 2 ** 20);    // 16 MiB: 50 000 × 16 MiB ≥ 50 GiB
 * blockSizeFor(16 * 2 ** 20, 2_000_000 * 2 ** 20); // 40 MiB
 * ```
 */
export function blockSizeFor(requested: number, maxObjectSize = 0, maxBlocks = AZURE_MAX_BLOCKS): number {
  const needed = Math.ceil(maxObjectSize / maxBlocks / MiB) * MiB;
  return Math.min(Math.max(requested, needed), AZURE_MAX_BLOCK_SIZE);
}

/**
 * The size of block `index` of an upload whose first blocks have `base`
 * bytes: the size doubles each time half of the remaining block budget is
 * used (after 25 000 blocks, 37 500, …), up to 4000 MiB. A stream longer
 * than planned so still fits: 16 MiB blocks reach about 3 TiB instead of
 * stopping at 781 GiB; memory grows only for such archives.
 *
 * @example
 * ```ts
 * blockSizeAt(0, 16 * 2 ** 20);      // 16 MiB
 * blockSizeAt(25_000, 16 * 2 ** 20); // 32 MiB
 * ```
 */
export function blockSizeAt(index: number, base: number, maxBlocks = AZURE_MAX_BLOCKS): number {
  const remaining = maxBlocks - index;
  if (remaining <= 0) return base;
  const doublings = Math.floor(Math.log2(maxBlocks / remaining));
  return Math.min(base * 2 ** doublings, Math.max(base, AZURE_MAX_BLOCK_SIZE));
}

/**
 * Block ids: same length for every block of a blob, unique per upload so concurrent saves never mix.
 *
 * @example
 * ```ts
 * blockId("0123456789abcdef", 0); // base64 of "0123456789abcdef-000000"
 * ```
 */
export function blockId(uploadId: string, index: number): string {
  return btoa(`${uploadId}-${String(index).padStart(6, "0")}`);
}

/** A staged block: its id and size. */
export interface BlockRef {
  id: string;
  size: number;
}
