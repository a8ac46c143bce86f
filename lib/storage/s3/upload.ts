/**
 * The s3 upload loop shared by the SDK backend and the fetch backend; each
 * brings only its wire requests ({@link MultipartOps}).
 *
 * The stream is copied into part buffers of the part size, reused once their
 * part is stored ((concurrency + 1) × part size, allocated once). A stream of
 * one part or less is a single PutObject; otherwise CreateMultipartUpload,
 * `concurrency` UploadParts in flight, CompleteMultipartUpload. A failing
 * stream, a failed part or an abort aborts the multipart upload before the
 * call rejects, so no object and no parts stay.
 *
 * @module
 */
import { StorageError, type TransferOptions } from "../backend.ts";
import { MAX_PARTS } from "./parts.ts";

/** The requests of one upload (each retried by the backend itself). */
export interface MultipartOps {
  /** PutObject of the whole (small) stream. */
  single(data: Uint8Array<ArrayBuffer>, signal: AbortSignal): Promise<void>;
  /** CreateMultipartUpload: the upload id. */
  create(signal: AbortSignal): Promise<string>;
  /** UploadPart: the part's ETag. */
  part(uploadId: string, number: number, data: Uint8Array<ArrayBuffer>, signal: AbortSignal): Promise<string>;
  /** CompleteMultipartUpload with the parts in order. */
  complete(uploadId: string, parts: { number: number; etag: string }[], signal: AbortSignal): Promise<void>;
  /** AbortMultipartUpload (logs, never throws). */
  abort(uploadId: string): Promise<void>;
  /** The typed error of a failure (what to fix). */
  error(err: unknown): StorageError;
}

/** What the loop needs to know besides the requests. */
export interface MultipartPlan {
  object: string;
  partSize: number;
  concurrency: number;
}

/**
 * Uploads `body` with `ops` (see the module doc).
 *
 * @example
 * ```ts
 * await multipartPut(body, options, { object: name, partSize, concurrency: 4 }, ops);
 * ```
 */
export async function multipartPut(
  body: ReadableStream<Uint8Array>,
  options: TransferOptions,
  plan: MultipartPlan,
  ops: MultipartOps,
): Promise<void> {
  const { partSize, concurrency } = plan;
  // `internal` aborts on the caller's signal or the first failed part; it cancels the source, so its
  // producer stops instead of waiting forever.
  const internal = new AbortController();
  const onAbort = () => internal.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const reader = body.getReader();
  internal.signal.addEventListener("abort", () => reader.cancel(internal.signal.reason).catch(() => {}), {
    once: true,
  });
  const pool: Uint8Array<ArrayBuffer>[] = [];
  const inflight = new Set<Promise<void>>();
  const parts: { number: number; etag: string }[] = [];
  let uploadId: string | undefined;
  let partCount = 0;
  let buffer = new Uint8Array(partSize);
  let fill = 0;

  const dispatch = async (data: Uint8Array<ArrayBuffer>, owner: Uint8Array<ArrayBuffer>) => {
    // Part promises never reject (a failure aborts `internal`), so waiting on them is safe.
    while (inflight.size >= concurrency) await Promise.race(inflight);
    internal.signal.throwIfAborted();
    if (partCount >= MAX_PARTS) {
      throw new StorageError(
        "TooLarge",
        `the archive needs more than ${MAX_PARTS} parts of ${partSize / 2 ** 20} MiB: raise ` +
          `PLUGIN_PART_SIZE_MB (or the maximum upload size setting, which grows the part size)`,
        { backend: "s3", op: "put", object: plan.object },
      );
    }
    uploadId ??= await ops.create(internal.signal);
    const number = ++partCount;
    const sent: Promise<void> = ops.part(uploadId, number, data, internal.signal).then((etag) => {
      parts.push({ number, etag });
      pool.push(owner);
    }).catch((err) => internal.abort(err)).finally(() => inflight.delete(sent));
    inflight.add(sent);
  };

  try {
    for (;;) {
      const { done, value } = await reader.read();
      internal.signal.throwIfAborted();
      if (done) break;
      let offset = 0;
      while (offset < value.length) {
        if (fill === partSize) {
          // Only sent once more bytes follow: a stream of one part or less is a single PutObject.
          await dispatch(buffer, buffer);
          buffer = pool.pop() ?? new Uint8Array(partSize);
          fill = 0;
        }
        const n = Math.min(partSize - fill, value.length - offset);
        buffer.set(value.subarray(offset, offset + n), fill);
        fill += n;
        offset += n;
      }
      options.release?.(value); // copied into part buffers: the producer may reuse it
    }
    if (uploadId === undefined && inflight.size === 0) {
      await ops.single(buffer.subarray(0, fill), internal.signal);
      return;
    }
    if (fill > 0) await dispatch(buffer.subarray(0, fill), buffer);
    while (inflight.size > 0) await Promise.race(inflight);
    internal.signal.throwIfAborted();
    parts.sort((x, y) => x.number - y.number);
    await ops.complete(uploadId!, parts, internal.signal);
  } catch (raw) {
    const err = internal.signal.aborted && !options.signal?.aborted ? internal.signal.reason ?? raw : raw;
    internal.abort(err);
    await Promise.allSettled([...inflight]);
    // Abort the multipart upload before rejecting, so no orphaned parts remain when put() returns.
    if (uploadId !== undefined) await ops.abort(uploadId);
    if (options.signal?.aborted) {
      throw new StorageError("Failed", "upload aborted; the multipart upload was cancelled", {
        backend: "s3",
        op: "put",
        object: plan.object,
        cause: options.signal.reason ?? err,
      });
    }
    throw ops.error(err);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}
