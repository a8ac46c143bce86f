/**
 * The azure upload loop shared by the SDK backend and the fetch backend;
 * each brings only its wire requests ({@link BlockOps}).
 *
 * The stream is copied into block buffers of the block size, reused once
 * their block is staged ((concurrency + 1) × block size, allocated once);
 * the block size grows with the block count ({@link blockSizeAt}), so a
 * stream longer than planned still fits. A stream shorter than one block is
 * a single Put Blob. Otherwise `concurrency` Put Blocks are in flight; the
 * block list is committed only after the byte count and the service's list
 * of uncommitted blocks agree with what was sent. A failed or aborted save
 * commits nothing: no partial blob, an older blob under the name stays.
 *
 * @module
 */
import { StorageError, TooLargeError, type TransferOptions } from "../backend.ts";
import { formatBytes } from "../../log.ts";
import { blockId, type BlockRef, blockSizeAt } from "./blocks.ts";

const KIND = "azure";
const MiB = 1024 * 1024;

/** The requests of one upload (each retried and mapped to typed errors by the backend). */
export interface BlockOps {
  /** Put Blob of the whole (small) stream. */
  single(data: Uint8Array<ArrayBuffer>, signal: AbortSignal): Promise<void>;
  /** Put Block. */
  stage(id: string, data: Uint8Array<ArrayBuffer>, signal: AbortSignal, index: number): Promise<void>;
  /** Get Block List (uncommitted): block id → size. */
  uncommitted(signal: AbortSignal): Promise<Map<string, number>>;
  /** Put Block List of these ids, in order. */
  commit(ids: string[], signal: AbortSignal): Promise<void>;
}

/** What the loop needs to know besides the requests. */
export interface BlockPlan {
  object: string;
  /** The first blocks' size (see `blockSizeFor`). */
  partSize: number;
  concurrency: number;
  maxBlocks: number;
}

/**
 * Uploads `body` with `ops` (see the module doc).
 *
 * @example
 * ```ts
 * await blockPut(body, options, { object: name, partSize, concurrency: 4, maxBlocks: 50_000 }, ops);
 * ```
 */
export async function blockPut(
  body: ReadableStream<Uint8Array>,
  options: TransferOptions,
  plan: BlockPlan,
  ops: BlockOps,
): Promise<void> {
  const outer = options.signal;
  const uploadId = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  const internal = new AbortController();
  const onAbort = () => internal.abort(outer!.reason);
  if (outer?.aborted) throw outer.reason;
  outer?.addEventListener("abort", onAbort, { once: true });
  const reader = body.getReader();
  // An abort ends a pending read (cancel resolves it as done); the loop then throws the reason.
  // (No Promise.race against a long-lived promise here: each race would keep its chunk alive.)
  internal.signal.addEventListener("abort", () => reader.cancel(internal.signal.reason).catch(() => {}), {
    once: true,
  });
  const blocks: BlockRef[] = [];
  const inflight = new Set<Promise<void>>();
  let total = 0;
  let blockSize = plan.partSize;
  let buffer = new Uint8Array(blockSize);
  let fill = 0;
  const pool: Uint8Array<ArrayBuffer>[] = [];
  const dispatch = async (data: Uint8Array<ArrayBuffer>) => {
    if (blocks.length >= plan.maxBlocks) throw tooLarge(plan);
    // Staging promises never reject (a failure aborts `internal`), so waiting on them is safe.
    while (inflight.size >= plan.concurrency) await Promise.race(inflight);
    if (internal.signal.aborted) throw internal.signal.reason;
    const ref = { id: blockId(uploadId, blocks.length), size: data.length };
    blocks.push(ref);
    const staged: Promise<void> = ops.stage(ref.id, data, internal.signal, blocks.length)
      .then(() => void (data.length === blockSize && pool.push(data)), (err) => internal.abort(err))
      .finally(() => inflight.delete(staged));
    inflight.add(staged);
  };

  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (internal.signal.aborted) throw internal.signal.reason;
      if (done) break;
      total += value.length;
      let offset = 0;
      while (offset < value.length) {
        const n = Math.min(blockSize - fill, value.length - offset);
        buffer.set(value.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
        if (fill === blockSize) {
          await dispatch(buffer);
          const grown = blockSizeAt(blocks.length, plan.partSize, plan.maxBlocks);
          if (grown !== blockSize) {
            blockSize = grown;
            pool.length = 0; // smaller buffers are of no further use
          }
          buffer = pool.pop() ?? new Uint8Array(blockSize);
          fill = 0;
        }
      }
      options.release?.(value); // copied into block buffers: the producer may reuse it
    }
    if (blocks.length === 0) {
      // Smaller than one block: a single Put Blob, atomic by itself.
      await ops.single(buffer.subarray(0, fill), internal.signal);
      return;
    }
    if (fill > 0) await dispatch(buffer.subarray(0, fill));
    while (inflight.size > 0) await Promise.race(inflight);
    if (internal.signal.aborted) throw internal.signal.reason;
    await verifyStaged(plan.object, blocks, total, await ops.uncommitted(internal.signal));
    await ops.commit(blocks.map((b) => b.id), internal.signal);
  } catch (err) {
    const reason = internal.signal.aborted ? internal.signal.reason : err;
    internal.abort(reason);
    await Promise.allSettled([...inflight]);
    reader.cancel(reason).catch(() => {});
    throw reason;
  } finally {
    outer?.removeEventListener("abort", onAbort);
  }
}

/** Checks the byte count and the service's uncommitted block list before the commit makes the blob visible. */
function verifyStaged(name: string, blocks: BlockRef[], total: number, onService: Map<string, number>): void {
  const staged = blocks.reduce((sum, b) => sum + b.size, 0);
  if (staged !== total) {
    throw new StorageError(
      "Failed",
      `read ${total} bytes from the archive stream but staged ${staged}: not committing the block list ` +
        `(the previous object, if any, is left as it was)`,
      { backend: KIND, op: "put", object: name },
    );
  }
  const bad = blocks.findIndex((b) => onService.get(b.id) !== b.size);
  if (bad >= 0) {
    const seen = onService.get(blocks[bad].id);
    throw new StorageError(
      "Failed",
      `block ${bad} of ${blocks.length} is ${
        seen === undefined ? "missing" : `${seen} bytes instead of ${blocks[bad].size}`
      } ` +
        `on the service (another save to the same key may have committed meanwhile): not committing; ` +
        `the save can simply be retried`,
      { backend: KIND, op: "put", object: name },
    );
  }
}

function tooLarge(plan: BlockPlan): TooLargeError {
  const mib = plan.partSize / MiB;
  let capacity = 0;
  for (let i = 0; i < plan.maxBlocks; i++) capacity += blockSizeAt(i, plan.partSize, plan.maxBlocks);
  return new TooLargeError(
    `the archive is larger than one Azure block blob can hold: ${plan.maxBlocks} blocks starting at ${mib} MiB ` +
      `and growing to at most 4000 MiB hold ${formatBytes(capacity)}. Raise ` +
      `PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB (or PLUGIN_PART_SIZE_MB, now ${mib}) or cache less under this mount`,
    { backend: KIND, op: "put", object: plan.object },
  );
}
