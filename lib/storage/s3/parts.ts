/**
 * The s3 transfer sizes shared by the SDK backend and the fetch backend:
 * S3's part limits, the part size rule, the download range size and the
 * DeleteObjects batch. Loads no SDK code.
 *
 * @module
 */

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last). */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part count per multipart upload. */
export const MAX_PARTS = 10_000;
/**
 * Largest default download range: 8 MiB ranges read as fast as 16 MiB ones, and with `concurrency`
 * of them in flight plus the one being consumed they hold half the memory.
 */
export const DOWNLOAD_RANGE_SIZE = 8 * MiB;
/** Objects per DeleteObjects call (the S3 limit). */
export const DELETE_BATCH = 1000;

/**
 * Builds the part size for an upload: at least `requested` (and S3's 5 MiB
 * minimum), grown so that {@link MAX_PARTS} parts hold `maxObjectSize`,
 * rounded up to a whole MiB.
 *
 * @example
 * ```ts
 * partSizeFor(16 * 2 ** 20, 51200 * 2 ** 20); // 16 MiB: 10 000 × 16 MiB ≥ 50 GiB
 * partSizeFor(5 * 2 ** 20, 100 * 2 ** 30);    // 11 MiB
 * ```
 */
export function partSizeFor(requested: number, maxObjectSize: number): number {
  const needed = Math.ceil(maxObjectSize / MAX_PARTS / MiB) * MiB;
  return Math.max(requested, MIN_PART_SIZE, needed);
}
