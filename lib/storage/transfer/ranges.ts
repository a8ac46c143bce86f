/**
 * A ranged download fed in order into one stream: `concurrency` ranges are
 * read in parallel, and the range at the head of the stream is handed on
 * chunk by chunk as its bytes arrive (the others buffer until their turn).
 * So decoding and extraction start with the first bytes of the object, not
 * once a whole range arrived, and never wait for the rest of a range they
 * are already inside. Memory stays at about `concurrency` × range size.
 *
 * A range is read by the backend's own request code under its own retry;
 * each attempt starts with {@link RangeSink.begin} and re-reads the range
 * from its start: bytes already handed on are skipped (ranges are pinned to
 * one version of the object, so they are the same bytes). An attempt the
 * retry abandoned can no longer add bytes once the next one began.
 *
 * @module
 */
import { type RangeSink, ShortReadError } from "./body.ts";

export { type RangeSink, streamRange } from "./body.ts";

/** Reads bytes [start, start + count) into `sink`, retrying as the backend does; resolves when all arrived. */
export type ReadRange = (start: number, count: number, sink: RangeSink, signal: AbortSignal) => Promise<void>;

/** One range: its chunks not yet handed on, and how far it got. */
class Range implements RangeSink {
  readonly count: number;
  chunks: Uint8Array[] = [];
  /** Bytes of the range received so far (over all attempts). */
  got = 0;
  /** The current attempt's number: only its chunks are taken. */
  #attempt = 0;
  done = false;
  error: unknown;
  #wake?: () => void;

  constructor(count: number) {
    this.count = count;
  }

  begin(): (chunk: Uint8Array) => void {
    const attempt = ++this.#attempt;
    let pos = 0;
    return (chunk) => {
      if (attempt !== this.#attempt) return; // an abandoned attempt's late bytes
      const end = pos + chunk.length;
      if (end > this.got) {
        this.chunks.push(pos < this.got ? chunk.subarray(this.got - pos) : chunk);
        this.got = end;
        this.notify();
      }
      pos = end;
    };
  }

  notify(): void {
    this.#wake?.();
    this.#wake = undefined;
  }

  changed(): Promise<void> {
    return new Promise((r) => (this.#wake = r));
  }
}

/** Options of {@link orderedRanges}. */
export interface OrderedRangesOptions {
  size: number;
  rangeSize: number;
  concurrency: number;
  read: ReadRange;
  /** The caller's signal (the transfer's): aborting it aborts every range. */
  signal?: AbortSignal;
  /** Aborts every range (a cancel, or the first failed range, aborts it too); made here when not given. */
  abort?: AbortController;
  /** Called once when the stream ends, fails or is cancelled. */
  finish?: () => void;
}

/**
 * The object's bytes as one stream, read as parallel ranges (see the
 * module doc). The first failed range (after its retries) fails the stream
 * and aborts the others.
 *
 * @example
 * ```ts
 * const stream = orderedRanges({ size, rangeSize: 8 << 20, concurrency: 4, read, signal: options.signal });
 * ```
 */
export function orderedRanges(o: OrderedRangesOptions): ReadableStream<Uint8Array> {
  const ranges = Math.ceil(o.size / o.rangeSize);
  const inflight: Range[] = [];
  const abort = o.abort ?? new AbortController();
  const onAbort = () => abort.abort(o.signal!.reason);
  o.signal?.addEventListener("abort", onAbort, { once: true });
  if (o.signal?.aborted) onAbort();
  let next = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    o.signal?.removeEventListener("abort", onAbort);
    o.finish?.();
  };
  const fill = () => {
    while (inflight.length < o.concurrency && next < ranges) {
      const start = next++ * o.rangeSize;
      const range = new Range(Math.min(o.rangeSize, o.size - start));
      inflight.push(range);
      o.read(start, range.count, range, abort.signal).then(
        () => {
          if (range.got !== range.count) {
            range.error = new ShortReadError(`short read: ${range.got} of ${range.count} bytes`);
          }
          range.done = true;
          range.notify();
        },
        (err) => {
          range.error = err;
          range.done = true;
          range.notify();
        },
      );
    }
  };
  return new ReadableStream<Uint8Array>({
    start: fill,
    pull: async (controller) => {
      for (;;) {
        const head = inflight[0];
        if (head === undefined) {
          finish();
          controller.close();
          return;
        }
        if (head.chunks.length > 0) {
          for (const chunk of head.chunks.splice(0)) controller.enqueue(chunk);
          return;
        }
        if (head.done) {
          if (head.error !== undefined) {
            abort.abort(head.error);
            finish();
            throw head.error;
          }
          inflight.shift();
          fill();
          continue;
        }
        await head.changed();
      }
    },
    cancel: (reason) => {
      abort.abort(reason ?? new Error("download cancelled"));
      finish();
    },
  }, { highWaterMark: 0 });
}
