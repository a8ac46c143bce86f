/**
 * Compression of the tar stream: gzip and zstd through `node:zlib`, and the
 * detection of the format of a stored object from its first bytes.
 *
 * Compression is parallel: the stream is cut into 4 MiB blocks, each block
 * is compressed as an independent gzip member / zstd frame by a small pool of
 * workers, and the results are written in order. The output is a standard
 * multi-member gzip / multi-frame zstd stream that `gzip -d`, `zstd -d`, Go's
 * readers and ours decompress (this is what `pigz` and `zstd -T0` do too).
 * Every zstd frame carries its content checksum, every gzip member its CRC.
 *
 * Decompression verifies them, and also detects truncation, which zlib's zstd
 * decoder does not report (a cut-off frame just ends the output): a small
 * frame tracker follows the zstd frame and block headers and insists that
 * the input ends on a frame boundary. zstd is decoded in a worker because a
 * checksum mismatch in Deno's `node:zlib` zstd decoder is raised as an
 * uncaught exception instead of a stream error; inside a worker it is caught
 * and turned into a {@link CorruptArchiveError}. That worker also computes
 * the SHA-256 of the tar stream for the integrity trailer, as it produces the
 * bytes, and takes its output buffers back once extracted (see producer.ts):
 * the extracting thread neither hashes nor allocates for a zstd restore.
 * Plain tar and gzip output is hashed by a worker of spent_hash.ts.
 * A small archive (up to 8 MiB of tar) is decoded on the calling thread
 * instead, by the one-shot decoder, which reports a checksum mismatch as an
 * ordinary error: starting the worker would cost more than the decoding.
 *
 * @module
 */
import zlib from "node:zlib";
import { CorruptArchiveError } from "./errors.ts";
import { attachProducer, type StreamProducer } from "./producer.ts";
import { SpentChunkHash } from "./spent_hash.ts";

export { CorruptArchiveError };

/** The archive formats (the `archive-format` setting). */
export type ArchiveFormat = "tar" | "gzip" | "zstd";

/** Bytes per independently compressed block. */
const COMPRESS_BLOCK = 4 << 20;
/** Size of a compressed-output buffer: above ZSTD_compressBound of a block, so any frame fits. */
const OUT_BLOCK = COMPRESS_BLOCK + (COMPRESS_BLOCK >> 7) + 4096;
/** Compressed-output buffers kept for reuse once the backend released them. */
const OUT_FREE_MAX = 8;
/** Decompressed bytes allowed to wait for the consumer before the decoder pauses. */
const OUT_LIMIT = 8 << 20;
/** Size of the decoder's output chunks (transferred to the caller as they are, no copy). */
const OUT_CHUNK = 1 << 20;
/** Output cap of the decoding on the calling thread: an input that decodes to more goes to the worker. */
const INLINE_OUT = OUT_LIMIT;
/**
 * Compressed zstd input up to this size is decoded on the calling thread, without the worker: the frames
 * of two blocks at most (see {@link compressStream}), so every archive of up to {@link INLINE_OUT} bytes of
 * tar, however little it compresses.
 */
const INLINE_IN = 2 * OUT_BLOCK;
/** Compressed input is batched into buffers of this size before it is sent to the decoder worker. */
const IN_CHUNK = 1 << 20;
/** Input buffers sent to the decoder worker and not yet consumed (they are recycled). */
const IN_FLIGHT = 3;
/**
 * How far behind the reader's acknowledged position the decoder worker keeps
 * hash states: the trailer header starts at most one PAX header (1 MiB) and
 * two output chunks before it.
 */
const HASH_KEEP = 8 << 20;

/**
 * The worker, as source text (a module URL would not survive `deno bundle`/`deno compile`).
 *
 * zstd goes through the native handle of a `node:zlib` stream object
 * (`_handle.writeSync`, what `zstdCompressSync` itself uses), when this Deno
 * has it: one compression context per worker is reused for every block
 * (instead of a new context and output buffers per call), output lands in a
 * preallocated buffer, and decoder errors, checksum mismatches included,
 * are thrown synchronously where we can catch them. Without the handle, the
 * public `zstdCompressSync` and `createZstdDecompress` are used.
 */
const WORKER_SOURCE = `
import zlib from "node:zlib";
import { createHash } from "node:crypto";
const OUT_LIMIT = ${OUT_LIMIT};
const HASH_KEEP = ${HASH_KEEP};
const OUT_CHUNK = ${OUT_CHUNK};
const C = zlib.constants;
function own(b) {
  // Pooled Buffers share an ArrayBuffer; copy those before transferring.
  const u = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return u.byteOffset === 0 && u.buffer.byteLength === u.byteLength ? u : u.slice();
}
function messageOf(err) {
  return String(err && err.message ? err.message : err);
}
function fail(err) {
  self.postMessage({ type: "error", message: messageOf(err) });
}
self.addEventListener("error", (e) => { e.preventDefault(); fail(e.error ?? e.message); });
self.addEventListener("unhandledrejection", (e) => { e.preventDefault(); fail(e.reason); });

/** The native handle of a zlib stream object, or null when this runtime does not expose one. */
function nativeHandle(z) {
  const h = z._handle;
  return h && typeof h.writeSync === "function" && z._writeState ? { h, state: z._writeState } : null;
}

// ---- compression: one block in, one zstd frame / gzip member out ----
let cz; // undefined: not tried yet; null: no native handle
${dropEmptyFrame.toString()}
// Returns { data, length }: the frame is data[0..length). With the native handle the frame is written
// straight into \`out\` (a buffer the main thread handed back for reuse) or a new buffer of the bound's size,
// and that whole buffer travels back: no copy, and the main thread can return it for the next block.
function zstdFrame(input, params, out) {
  if (cz === undefined) cz = nativeHandle(zlib.createZstdCompress({ params }));
  if (cz === null) {
    const data = dropEmptyFrame(own(zlib.zstdCompressSync(input, { params })));
    return { data, length: data.length };
  }
  const bound = input.length + (input.length >> 7) + 4096; // above ZSTD_compressBound
  const dst = out && out.length >= bound ? out : new Uint8Array(Math.max(bound, ${OUT_BLOCK}));
  try {
    cz.h.writeSync(C.ZSTD_e_end, input, 0, input.length, dst, 0, dst.length);
  } catch (err) {
    cz = undefined; // the context may be mid-frame: start over with a new one
    throw err;
  }
  const availOut = cz.state[0];
  const availIn = cz.state[1];
  if (availIn !== 0 || availOut === 0) {
    cz = undefined;
    throw new Error("the zstd frame did not fit its output buffer");
  }
  return { data: dst, length: dst.length - availOut };
}

// ---- the SHA-256 of the decompressed output (the archive's integrity digest, see producer.ts) ----
// Every output chunk is hashed before it is posted, and the hash state from before each recent chunk is
// kept (a copy is a few hundred bytes): the reader later names the chunk holding the trailer and sends
// that chunk's bytes before it, and the digest is finished from that state. States of chunks more than
// HASH_KEEP bytes behind what the reader acknowledged are dropped (the trailer header starts at most
// one PAX header, 1 MiB, before the reader's position).
let hs = null; // { hash, produced, acked, snaps: [{ start, state }], active }
function hashOut(u) {
  if (hs === null || hs.active === false) return;
  if (hs.active === undefined) {
    // Only our archives carry a digest, and they begin with a PAX global header (typeflag 'g'):
    // anything else (Go plugin, GNU tar) is not hashed at all.
    hs.active = u.byteLength <= 156 || u[156] === 0x67;
    if (!hs.active) {
      hs.hash = null;
      return;
    }
  }
  hs.snaps.push({ start: hs.produced, state: hs.hash.copy() });
  hs.hash.update(u);
  hs.produced += u.byteLength;
  trimStates();
}
function trimStates() {
  while (hs.snaps.length > 1 && hs.snaps[1].start + HASH_KEEP <= hs.acked) hs.snaps.shift();
}
function digest(m) {
  let hex = null;
  let why = "the stream does not begin with a PAX global header";
  if (hs !== null && hs.active !== false) {
    const snap = hs.snaps.find((s) => s.start === m.start);
    if (snap) hex = snap.state.copy().update(m.head).digest("hex");
    else why = "no hash state kept for the chunk at byte " + m.start;
  }
  self.postMessage({ type: "digest", id: m.id, hex, why });
}

// ---- decompression: a stream of input buffers in, OUT_CHUNK buffers out ----
let dz = null; // native decoder
let stream = null; // fallback decoder (a node:zlib stream)
let paused = false;
const inq = []; // input buffers not yet fully consumed: { data, off, len }
let unacked = 0; // output bytes posted and not yet acknowledged by the reader
let closing = false;
let ended = false;
let out = null;
let outPos = 0;
const spare = []; // output buffers the reader handed back (recycle), written into again
function emit() {
  if (outPos === 0) return;
  let u;
  if (outPos === out.length) {
    u = out;
    out = null;
  } else if (outPos >= OUT_CHUNK / 4) {
    u = out.subarray(0, outPos);
    out = null;
  } else {
    u = out.slice(0, outPos); // small: copy, keep the big buffer
  }
  outPos = 0;
  unacked += u.byteLength;
  hashOut(u);
  self.postMessage({ type: "out", data: u }, [u.buffer]);
}
function consumed(data) {
  self.postMessage({ type: "consumed", data }, [data.buffer]);
}
function pump() {
  let stalls = 0;
  while (unacked <= OUT_LIMIT && inq.length > 0) {
    const cur = inq[0];
    if (out === null) {
      out = spare.pop() ?? new Uint8Array(OUT_CHUNK);
      outPos = 0;
    }
    dz.h.writeSync(C.ZSTD_e_continue, cur.data, cur.off, cur.len, out, outPos, out.length - outPos);
    const availOut = dz.state[0];
    const availIn = dz.state[1];
    const produced = out.length - outPos - availOut;
    const used = cur.len - availIn;
    outPos += produced;
    cur.off += used;
    cur.len = availIn;
    stalls = produced === 0 && used === 0 ? stalls + 1 : 0;
    if (stalls > 2) throw new Error("the zstd decoder stopped making progress");
    if (availOut === 0) emit();
    else if (cur.len === 0) {
      inq.shift();
      consumed(cur.data);
    }
  }
  if (inq.length === 0) {
    emit();
    if (closing && !ended) {
      ended = true;
      self.postMessage({ type: "end" });
    }
  }
}
function safely(fn) {
  try {
    fn();
  } catch (err) {
    fail(err);
  }
}
function openFallback() {
  stream = zlib.createZstdDecompress({ chunkSize: 256 * 1024 });
  stream.on("data", (c) => {
    const u = own(c);
    unacked += u.byteLength;
    hashOut(u);
    self.postMessage({ type: "out", data: u }, [u.buffer]);
    if (unacked > OUT_LIMIT && !paused) { paused = true; stream.pause(); }
  });
  stream.on("error", fail);
  stream.on("end", () => self.postMessage({ type: "end" }));
}

self.onmessage = (e) => {
  const m = e.data;
  if (m.type === "compress") {
    try {
      const input = m.data.subarray(0, m.length);
      let frame;
      if (m.format === "zstd") frame = zstdFrame(input, m.params, m.out);
      else {
        const data = own(zlib.gzipSync(input, { level: m.level, strategy: m.strategy }));
        frame = { data, length: data.length };
      }
      const transfer = [frame.data.buffer, m.data.buffer];
      if (m.out && m.out !== frame.data) transfer.push(m.out.buffer); // too small: back to be dropped
      self.postMessage(
        { type: "compressed", id: m.id, data: frame.data, length: frame.length, block: m.data },
        transfer,
      );
    } catch (err) {
      self.postMessage({ type: "failed", id: m.id, message: messageOf(err) });
    }
  } else if (m.type === "open") {
    hs = { hash: createHash("sha256"), produced: 0, acked: 0, snaps: [], active: undefined };
    dz = nativeHandle(zlib.createZstdDecompress());
    if (dz === null) openFallback();
  } else if (m.type === "in") {
    if (dz) {
      inq.push({ data: m.data, off: 0, len: m.length });
      safely(pump);
    } else {
      stream.write(m.data.subarray(0, m.length), (err) => { if (!err) consumed(m.data); });
    }
  } else if (m.type === "digest") {
    digest(m);
  } else if (m.type === "recycle") {
    if (spare.length < 4 && m.data.byteLength === OUT_CHUNK) spare.push(m.data);
  } else if (m.type === "ack") {
    unacked -= m.n;
    if (hs !== null) {
      hs.acked += m.n;
      if (hs.active) trimStates();
    }
    if (dz) safely(pump);
    else if (paused && unacked <= OUT_LIMIT / 2) { paused = false; stream.resume(); }
  } else if (m.type === "close") {
    closing = true;
    if (dz) safely(pump);
    else stream.end();
  }
};
`;

let workerUrl: string | undefined;

function newWorker(): Worker {
  workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  return new Worker(workerUrl, { type: "module" });
}

function errorMessage(e: ErrorEvent | MessageEvent): string {
  if (e instanceof ErrorEvent) return e.message;
  return String(e.data);
}

/** Compression parameters for one format and level, validated. */
function codecParams(format: "gzip" | "zstd", level: number): Record<string, unknown> {
  if (!Number.isInteger(level)) throw new RangeError(`compression level must be an integer, got ${level}`);
  if (format === "gzip") {
    if (level < -2 || level > 9) {
      throw new RangeError(
        `gzip compression level ${level} is invalid: use -1 (default, 6), -2 (Huffman only) or 0–9`,
      );
    }
    return level === -2
      ? { level: 6, strategy: zlib.constants.Z_HUFFMAN_ONLY }
      : { level, strategy: zlib.constants.Z_DEFAULT_STRATEGY };
  }
  // zstd: -1 is the library default (3); like the Go plugin, other values are mapped, not refused.
  const zl = level === -1 ? 3 : Math.min(Math.max(level, 1), 22);
  const params: Record<number, number> = {
    [zlib.constants.ZSTD_c_compressionLevel]: zl,
    [zlib.constants.ZSTD_c_checksumFlag]: 1,
  };
  if (zl === 3) Object.assign(params, LEVEL3_TABLES);
  return { params };
}

/**
 * Match-finder sizes for the default level (3), smaller than libzstd's
 * (window 2^21, hash 2^17, chain 2^16 entries): each 4 MiB block is its own
 * frame, so a 1 MiB window loses little, and tables of 256 + 128 KiB stay in
 * a core's cache. On the bench tree (realistic, 386 MB of tar) this cut the
 * compression CPU by ≈ 15–19 % (minimum of 5–6 alternating runs on the
 * loaded 2-core machine) for 0.4 % more output; still the same strategy
 * (dfast) and a standard frame any zstd decoder reads (a smaller window only
 * needs less decoder memory).
 */
const LEVEL3_TABLES: Record<number, number> = {
  [zlib.constants.ZSTD_c_windowLog]: 20,
  [zlib.constants.ZSTD_c_hashLog]: 16,
  [zlib.constants.ZSTD_c_chainLog]: 15,
};

/**
 * zstdCompressSync sometimes appends an empty 13-byte frame (magic,
 * single-segment header with content size 0, an empty last raw block,
 * checksum). It carries no data, but a stream cut right before it would
 * still look complete: drop it, so the last bytes of every block are its
 * real checksum. Also part of the worker's source (self-contained).
 */
function dropEmptyFrame(u: Uint8Array): Uint8Array {
  const n = u.byteLength;
  if (n <= 13) return u;
  const t = u.subarray(n - 13);
  const empty = t[0] === 0x28 && t[1] === 0xb5 && t[2] === 0x2f && t[3] === 0xfd && t[4] === 0x24 &&
    t[5] === 0 && t[6] === 1 && t[7] === 0 && t[8] === 0;
  return empty ? u.slice(0, n - 13) : u;
}

/**
 * Compresses an archive that fits one block on the calling thread, as the
 * worker would (same parameters, one frame or member): starting a worker
 * (a new isolate loading `node:zlib` and `node:crypto`) cost more than the
 * compression of a small cache.
 */
function compressHere(
  format: "gzip" | "zstd",
  params: Record<string, unknown>,
  input: Uint8Array,
): Uint8Array {
  if (format === "zstd") {
    const out = zlib.zstdCompressSync(input, params as zlib.ZstdOptions);
    return dropEmptyFrame(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  }
  const out = zlib.gzipSync(input, params as zlib.ZlibOptions);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** A pool of compression workers, started on first use; blocks come back to be reused. */
class CompressPool {
  #workers: { w: Worker; busy: number }[] = [];
  #size: number;
  #jobs = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  #next = 0;
  #format: "gzip" | "zstd";
  #params: Record<string, unknown>;
  /** Input blocks the workers handed back, ready to be filled again. */
  readonly free: Uint8Array[] = [];
  /** Output buffers the consumer released, to compress the next blocks into. */
  #outFree: Uint8Array[] = [];
  /** Output buffers this pool handed out (only those may come back). */
  #issued = new WeakSet<ArrayBufferLike>();

  constructor(format: "gzip" | "zstd", params: Record<string, unknown>, size: number) {
    this.#format = format;
    this.#params = params;
    this.#size = size;
  }

  #worker(): { w: Worker; busy: number } {
    let best = this.#workers.find((x) => x.busy === 0);
    if (!best && this.#workers.length < this.#size) {
      const slot = { w: newWorker(), busy: 0 };
      slot.w.onmessage = (e: MessageEvent) => {
        const m = e.data;
        const job = this.#jobs.get(m.id);
        slot.busy--;
        if (m.block) this.free.push(m.block);
        if (!job) return;
        this.#jobs.delete(m.id);
        if (m.type === "compressed") {
          const frame: Uint8Array = m.data;
          // A frame in a buffer of the reusable size is offered back through release() once written.
          if (frame.byteLength === OUT_BLOCK) this.#issued.add(frame.buffer);
          job.resolve(frame.subarray(0, m.length));
        } else job.reject(new Error(`${this.#format} compression failed: ${m.message}`));
      };
      slot.w.onerror = (e) => {
        e.preventDefault();
        this.#failAll(new Error(`${this.#format} compression worker failed: ${errorMessage(e)}`));
      };
      this.#workers.push(slot);
      best = slot;
    }
    best ??= this.#workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    return best;
  }

  #failAll(err: Error): void {
    for (const job of this.#jobs.values()) job.reject(err);
    this.#jobs.clear();
  }

  /**
   * Compresses `block[0..length)` into one gzip member / zstd frame. The
   * block's buffer is transferred to the worker and comes back in `free`.
   */
  compress(block: Uint8Array, length: number): Promise<Uint8Array> {
    const id = this.#next++;
    const slot = this.#worker();
    slot.busy++;
    const p = new Promise<Uint8Array>((resolve, reject) => this.#jobs.set(id, { resolve, reject }));
    const out = this.#format === "zstd" ? this.#outFree.pop() : undefined;
    const transfer = [block.buffer as ArrayBuffer];
    if (out) transfer.push(out.buffer as ArrayBuffer);
    slot.w.postMessage(
      { type: "compress", id, format: this.#format, data: block, length, out, ...this.#params },
      transfer,
    );
    return p;
  }

  /**
   * Takes back a compressed chunk the consumer no longer needs (see
   * `TransferOptions.release`), so the next frame is written into its
   * memory instead of a new buffer. Chunks this pool did not hand out are
   * ignored.
   */
  release(chunk: Uint8Array): void {
    const buffer = chunk.buffer;
    if (!this.#issued.has(buffer) || this.#outFree.length >= OUT_FREE_MAX) return;
    this.#issued.delete(buffer);
    this.#outFree.push(new Uint8Array(buffer as ArrayBuffer));
  }

  close(): void {
    this.#failAll(new Error("compression cancelled"));
    for (const { w } of this.#workers) w.terminate();
    this.#workers = [];
    this.free.length = 0;
    this.#outFree.length = 0;
  }
}

/**
 * The compression transform, plus `release`: hand each output chunk back
 * once it was written (pass it as the backend's `TransferOptions.release`),
 * so its memory takes the next frame instead of a new buffer. Optional: a
 * chunk never released is simply garbage collected.
 */
export type CompressStream = TransformStream<Uint8Array, Uint8Array> & { release(chunk: Uint8Array): void };

/** Options of {@link compressStream}. */
export interface CompressOptions {
  /** Compression threads (default: the CPU count, at most 4). */
  workers?: number;
  /**
   * Called with every input chunk once its bytes were copied into a block,
   * so the producer can reuse its memory (see `pack`'s `release`).
   */
  release?: (chunk: Uint8Array) => void;
}

/**
 * A transform that compresses a byte stream. `tar` passes bytes through;
 * `gzip` takes level -1 (zlib default, 6), -2 (Huffman only) or 0–9; `zstd`
 * takes -1 (default, 3) or 1–22 (others are clamped, as the Go plugin maps
 * them), always with the content checksum on. Blocks are compressed in
 * parallel on up to `workers` threads (default: the CPU count, at most 4).
 *
 * Memory is bounded: at most `workers + 1` blocks of 4 MiB are being
 * compressed or waiting to be written, and their buffers are reused (the
 * output buffers too, when the consumer calls `release`). Input
 * chunks are copied into the blocks and handed to `options.release` (for
 * `tar` they pass on as they are and are not released).
 *
 * @example
 * ```ts
 * const { stream } = pack({ mount: "node_modules" });
 * await stream.pipeThrough(compressStream("zstd", -1)).pipeTo(upload);
 * ```
 */
export function compressStream(
  format: ArchiveFormat,
  level: number,
  options: CompressOptions = {},
): CompressStream {
  if (format === "tar") return Object.assign(new TransformStream<Uint8Array, Uint8Array>(), { release() {} });
  if (format !== "gzip" && format !== "zstd") throw new RangeError(`unknown archive format ${format}`);
  const params = codecParams(format, level);
  const size = options.workers ?? Math.min(4, Math.max(1, navigator.hardwareConcurrency || 1));
  const pool = new CompressPool(format, params, size);
  const inFlight = size + 1;
  const pending: Promise<Uint8Array>[] = [];
  let block: Uint8Array | undefined;
  let fill = 0;
  let submitted = 0;

  const submit = () => {
    submitted++;
    const p = pool.compress(block ?? new Uint8Array(0), fill);
    p.catch(() => {}); // observed in order below; avoid an unhandled rejection meanwhile
    pending.push(p);
    block = undefined;
    fill = 0;
  };

  const stream = new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      let off = 0;
      while (off < chunk.length) {
        block ??= pool.free.pop() ?? new Uint8Array(COMPRESS_BLOCK);
        const n = Math.min(chunk.length - off, block.length - fill);
        block.set(chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (off === chunk.length) options.release?.(chunk); // copied: the producer may reuse it
        if (fill === block.length) {
          submit();
          while (pending.length >= inFlight) controller.enqueue(await pending.shift()!);
        }
      }
    },
    async flush(controller) {
      try {
        if (submitted === 0) {
          // The whole archive fits one block (an empty one included: one valid, empty frame).
          controller.enqueue(compressHere(format, params, block?.subarray(0, fill) ?? new Uint8Array(0)));
          return;
        }
        if (fill > 0) submit();
        while (pending.length > 0) controller.enqueue(await pending.shift()!);
      } finally {
        pool.close();
      }
    },
    cancel() {
      pool.close();
    },
  });
  return Object.assign(stream, { release: (chunk: Uint8Array) => pool.release(chunk) });
}

/** Decompressed chunks waiting for the consumer, with a byte count for backpressure. */
class ChunkQueue {
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #ended = false;
  #error: unknown = undefined;
  #failed = false;
  #wakeReader?: () => void;
  #wakeWriters: (() => void)[] = [];
  /** Called with the size of every chunk handed to the consumer. */
  onShift?: (n: number) => void;

  get bytes(): number {
    return this.#bytes;
  }

  push(c: Uint8Array): void {
    if (c.length === 0) return;
    this.#chunks.push(c);
    this.#bytes += c.length;
    this.#wakeReader?.();
  }

  end(): void {
    this.#ended = true;
    this.#wakeReader?.();
  }

  fail(err: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = err;
    this.#wakeReader?.();
    for (const w of this.#wakeWriters.splice(0)) w();
  }

  get failed(): boolean {
    return this.#failed;
  }

  get error(): unknown {
    return this.#error;
  }

  async shift(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#failed) throw this.#error;
      const c = this.#chunks.shift();
      if (c) {
        this.#bytes -= c.length;
        this.onShift?.(c.length);
        if (this.#bytes <= OUT_LIMIT / 2) { for (const w of this.#wakeWriters.splice(0)) w(); }
        return c;
      }
      if (this.#ended) return null;
      await new Promise<void>((r) => (this.#wakeReader = r));
      this.#wakeReader = undefined;
    }
  }

  /** Resolves when the queue holds at most `limit` bytes (or failed). */
  async waitBelow(limit: number): Promise<void> {
    while (this.#bytes > limit && !this.#failed) await new Promise<void>((r) => this.#wakeWriters.push(r));
  }
}

/** One decoder behind {@link decompressStream}. */
interface Decoder {
  write(chunk: Uint8Array): Promise<void>;
  close(): Promise<void>;
  abort(): void;
  /** The consumer read the end of the output. */
  drained?(): void;
  /** Hashes the output off this thread, for the reader (plain tar and gzip; see spent_hash.ts). */
  readonly hash?: SpentChunkHash;
}

function corrupt(format: ArchiveFormat, detail: string, cause?: unknown): CorruptArchiveError {
  return new CorruptArchiveError(`${format} stream is corrupt: ${detail}`, { cause });
}

/** Pass-through for uncompressed tar. */
class TarDecoder implements Decoder {
  #q: ChunkQueue;
  /** The archive's digest, hashed off this thread (see spent_hash.ts). */
  readonly hash = new SpentChunkHash();
  constructor(q: ChunkQueue) {
    this.#q = q;
  }
  async write(chunk: Uint8Array): Promise<void> {
    this.hash.emitted(chunk);
    this.#q.push(chunk);
    await this.#q.waitBelow(OUT_LIMIT);
    await this.hash.waitBelow();
  }
  close(): Promise<void> {
    this.#q.end();
    return Promise.resolve();
  }
  abort(): void {
    this.hash.stop();
  }
  drained(): void {
    this.hash.drained();
  }
}

/** gzip through node:zlib (its errors arrive as stream errors; multi-member input is read whole). */
class GzipDecoder implements Decoder {
  #q: ChunkQueue;
  #z = zlib.createGunzip({ chunkSize: 256 << 10 });
  /** The archive's digest, hashed off this thread (see spent_hash.ts); zlib's buffers are copied. */
  readonly hash = new SpentChunkHash({ transfer: false });
  #paused = false;
  #done: Promise<void>;
  constructor(q: ChunkQueue) {
    this.#q = q;
    this.#done = new Promise<void>((resolve, reject) => {
      this.#z.on("end", resolve);
      this.#z.on("error", (err: Error) => {
        const e = corrupt("gzip", err.message, err);
        q.fail(e);
        reject(e);
      });
    });
    this.#done.catch(() => {});
    this.#z.on("data", (c: Uint8Array) => {
      const chunk = new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
      this.hash.emitted(chunk);
      q.push(chunk);
      if (q.bytes > OUT_LIMIT && !this.#paused) {
        this.#paused = true;
        this.#z.pause();
      }
    });
    q.onShift = () => {
      if (this.#paused && q.bytes <= OUT_LIMIT / 2) {
        this.#paused = false;
        this.#z.resume();
      }
    };
  }
  async write(chunk: Uint8Array): Promise<void> {
    await this.hash.waitBelow();
    return new Promise<void>((resolve, reject) => {
      if (this.#q.failed) return reject(this.#q.error);
      this.#z.write(
        chunk,
        (err) => (err ? reject(this.#q.error ?? corrupt("gzip", err.message, err)) : resolve()),
      );
    });
  }
  async close(): Promise<void> {
    this.#z.end();
    await this.#done;
    this.#q.end();
  }
  abort(): void {
    this.#z.destroy();
    this.hash.stop();
  }
  drained(): void {
    this.hash.drained();
  }
}

type FrameState = "magic" | "skipsize" | "skip" | "fhd" | "fhrest" | "block" | "content" | "checksum";

/**
 * Follows zstd frame and block headers (without decoding) so that an input
 * cut anywhere, even inside the final checksum, is reported as truncated.
 * It also tells where each frame ends ({@link ZstdFrameTracker.onFrame}).
 */
export class ZstdFrameTracker {
  #need = 4; // bytes wanted for the current header field
  #have = 0;
  #buf = new Uint8Array(18);
  #state: FrameState = "magic";
  #skip = 0;
  #checksum = false;
  #last = false;
  /** Stream offset of the byte after the current header field or skipped run. */
  #at = 0;
  #frameStart = 0;
  /** Number of complete frames seen. */
  frames = 0;
  /** Called with the stream offsets of every complete data frame (skippable frames are not reported). */
  onFrame?: (start: number, end: number) => void;

  /** Feeds compressed bytes; throws CorruptArchiveError on an impossible header. */
  push(data: Uint8Array): void {
    const base = this.#at;
    let i = 0;
    while (i < data.length) {
      if (this.#state === "skip" || this.#state === "content") {
        const n = Math.min(this.#skip, data.length - i);
        this.#skip -= n;
        i += n;
        this.#at = base + i;
        if (this.#skip === 0) this.#afterSkip();
        continue;
      }
      const n = Math.min(this.#need - this.#have, data.length - i);
      this.#buf.set(data.subarray(i, i + n), this.#have);
      this.#have += n;
      i += n;
      this.#at = base + i;
      if (this.#have === this.#need) this.#field();
    }
  }

  #frameDone(): void {
    this.frames++;
    this.onFrame?.(this.#frameStart, this.#at);
  }

  #want(state: FrameState, n: number): void {
    this.#state = state;
    this.#need = n;
    this.#have = 0;
    if (n === 0) this.#field();
  }

  #afterSkip(): void {
    if (this.#state === "skip") return this.#want("magic", 4);
    // end of a block's content
    if (!this.#last) return this.#want("block", 3);
    if (this.#checksum) return this.#want("checksum", 4);
    this.#frameDone();
    this.#want("magic", 4);
  }

  #field(): void {
    const b = this.#buf;
    switch (this.#state) {
      case "magic": {
        const magic = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
        this.#frameStart = this.#at - 4;
        if (magic === 0xfd2fb528) return this.#want("fhd", 1);
        if ((magic & 0xfffffff0) === 0x184d2a50) return this.#want("skipsize", 4);
        throw corrupt("zstd", `bad frame magic 0x${magic.toString(16)}`);
      }
      case "skipsize":
        this.#skip = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
        this.#state = "skip";
        if (this.#skip === 0) this.#afterSkip();
        return;
      case "fhd": {
        const fhd = b[0];
        const fcsFlag = fhd >> 6;
        const single = (fhd >> 5) & 1;
        if (fhd & 0x08) throw corrupt("zstd", "reserved bit set in a frame header");
        this.#checksum = ((fhd >> 2) & 1) === 1;
        const did = [0, 1, 2, 4][fhd & 3];
        const fcs = fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag];
        return this.#want("fhrest", (single ? 0 : 1) + did + fcs);
      }
      case "fhrest":
        this.#last = false;
        return this.#want("block", 3);
      case "block": {
        const h = b[0] | (b[1] << 8) | (b[2] << 16);
        this.#last = (h & 1) === 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) throw corrupt("zstd", "reserved block type");
        this.#skip = type === 1 ? 1 : size;
        this.#state = "content";
        if (this.#skip === 0) this.#afterSkip();
        return;
      }
      case "checksum":
        this.#frameDone();
        return this.#want("magic", 4);
    }
  }

  /** Throws unless the input ended exactly after a complete frame. */
  finish(): void {
    if (this.#state !== "magic" || this.#have !== 0 || this.frames === 0) {
      throw corrupt("zstd", "the stream ends inside a frame (truncated archive)");
    }
  }
}

/**
 * zstd in a worker (see the module doc), with the frame tracker for
 * truncation. Input is copied into 1 MiB buffers that travel to the worker
 * and back (up to three in flight, so decoding overlaps with the download),
 * and the worker's output chunks are handed on without a copy.
 *
 * The worker also hashes its output when it begins with a PAX global header
 * (our archives): it is the {@link StreamProducer} of the stream, so the
 * extracting thread does not hash, and it takes its output buffers back once
 * extracted. It therefore outlives the input: it is stopped once its output
 * was all read, or the digest was answered.
 */
class ZstdDecoder implements Decoder, StreamProducer {
  #q: ChunkQueue;
  #w: Worker;
  #tracker = new ZstdFrameTracker();
  #free: Uint8Array[] = [];
  #buf: Uint8Array | undefined;
  #fill = 0;
  #inFlight = 0;
  #wake?: { resolve: () => void; reject: (e: unknown) => void };
  #ended: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void };
  #closed = false;
  /** All output arrived (the worker said "end"). */
  #complete = false;
  #drained = false;
  #digestAsked = false;
  #digests = new Map<number, { resolve: (hex: string) => void; reject: (e: unknown) => void }>();
  /** Output buffers of the full chunk size this decoder handed out (only those are taken back). */
  #issued = new WeakSet<ArrayBufferLike>();
  #nextDigest = 0;

  constructor(q: ChunkQueue) {
    this.#q = q;
    let resolve!: () => void, reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => [resolve, reject] = [res, rej]);
    promise.catch(() => {});
    this.#ended = { promise, resolve, reject };
    this.#w = newWorker();
    this.#w.onmessage = (e: MessageEvent) => {
      const m = e.data;
      if (m.type === "out") {
        if (m.data.buffer.byteLength === OUT_CHUNK) this.#issued.add(m.data.buffer);
        q.push(m.data);
      } else if (m.type === "consumed") {
        this.#inFlight--;
        this.#free.push(m.data);
        this.#wake?.resolve();
      } else if (m.type === "end") this.#ended.resolve();
      else if (m.type === "digest") {
        const pending = this.#digests.get(m.id);
        this.#digests.delete(m.id);
        if (m.hex !== null) pending?.resolve(m.hex);
        else pending?.reject(new CorruptArchiveError(`the archive's SHA-256 cannot be verified: ${m.why}`));
        this.#stopWhenDone();
      } else if (m.type === "error") this.#fail(corrupt("zstd", m.message));
    };
    this.#w.onerror = (e) => {
      e.preventDefault();
      this.#fail(corrupt("zstd", errorMessage(e)));
    };
    q.onShift = (n) => this.#w.postMessage({ type: "ack", n });
    this.#w.postMessage({ type: "open" });
  }

  #fail(err: unknown): void {
    this.#q.fail(err);
    this.#wake?.reject(err);
    this.#ended.reject(err);
    this.abort();
  }

  /** Sends the current input buffer, after waiting for a free slot. */
  async #send(): Promise<void> {
    while (this.#inFlight >= IN_FLIGHT) {
      if (this.#q.failed) throw this.#q.error;
      await new Promise<void>((resolve, reject) => (this.#wake = { resolve, reject }));
      this.#wake = undefined;
    }
    if (this.#q.failed) throw this.#q.error;
    const buf = this.#buf!;
    this.#inFlight++;
    this.#w.postMessage({ type: "in", data: buf, length: this.#fill }, [buf.buffer as ArrayBuffer]);
    this.#buf = undefined;
    this.#fill = 0;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#q.failed) throw this.#q.error;
    try {
      this.#tracker.push(chunk);
    } catch (err) {
      this.#fail(err);
      throw err;
    }
    let off = 0;
    while (off < chunk.length) {
      this.#buf ??= this.#free.pop() ?? new Uint8Array(IN_CHUNK);
      const n = Math.min(chunk.length - off, this.#buf.length - this.#fill);
      this.#buf.set(chunk.subarray(off, off + n), this.#fill);
      this.#fill += n;
      off += n;
      if (this.#fill === this.#buf.length) await this.#send();
    }
  }

  async close(): Promise<void> {
    try {
      this.#tracker.finish();
    } catch (err) {
      this.#fail(err);
      throw err;
    }
    if (this.#fill > 0) await this.#send();
    this.#w.postMessage({ type: "close" });
    await this.#ended.promise;
    this.#q.end();
    this.#complete = true;
    this.#stopWhenDone();
  }

  digest(chunkStart: number, head: Uint8Array): Promise<string> {
    if (this.#closed) {
      return Promise.reject(new Error("the zstd decoder was stopped before the archive's digest was asked"));
    }
    this.#digestAsked = true;
    const id = this.#nextDigest++;
    const own = head.slice(); // a view would clone its whole buffer
    const p = new Promise<string>((resolve, reject) => this.#digests.set(id, { resolve, reject }));
    this.#w.postMessage({ type: "digest", id, start: chunkStart, head: own }, [own.buffer]);
    return p;
  }

  recycle(chunk: Uint8Array): void {
    const buffer = chunk.buffer;
    if (this.#closed || !this.#issued.has(buffer)) return;
    this.#issued.delete(buffer);
    this.#w.postMessage({ type: "recycle", data: new Uint8Array(buffer) }, [buffer as ArrayBuffer]);
  }

  drained(): void {
    this.#drained = true;
    this.#stopWhenDone();
  }

  /** Stops the worker once nothing more can be asked of it. */
  #stopWhenDone(): void {
    if (this.#complete && this.#digests.size === 0 && (this.#drained || this.#digestAsked)) this.abort();
  }

  abort(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#w.terminate();
    const err = this.#q.error ?? new Error("the zstd decoder was stopped before it answered the digest");
    for (const d of this.#digests.values()) d.reject(err);
    this.#digests.clear();
  }
}

/**
 * zstd for small archives, decoded on the calling thread: the compressed
 * input is held until it ends or passes {@link INLINE_IN}. A whole input that
 * small is checked by the frame tracker (truncation), then each frame is
 * decoded by `zstdDecompressSync`, which reports a checksum mismatch as a
 * catchable error (it stops after the first frame of a multi-frame input, so
 * frames are decoded one by one, at the boundaries the tracker found); the
 * output stops at {@link INLINE_OUT} bytes (a decompression bomb costs at
 * most that). Starting the decoder worker costs ≈50 ms, most of a 1 MB
 * restore. Anything larger, or a small input that decodes to more than the
 * cap, goes to the worker ({@link ZstdDecoder}) with the held bytes first.
 * Without a worker the stream has no producer, so the extractor hashes the
 * (few) tar bytes itself.
 */
class SmallZstdDecoder implements Decoder {
  #q: ChunkQueue;
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /** The worker decoder, once the input turned out too large to decode here. */
  worker?: ZstdDecoder;

  constructor(q: ChunkQueue) {
    this.#q = q;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.worker) return this.worker.write(chunk);
    if (this.#q.failed) throw this.#q.error;
    if (this.#heldBytes + chunk.length <= INLINE_IN) {
      this.#held.push(chunk.slice()); // the caller may reuse its buffer
      this.#heldBytes += chunk.length;
      return;
    }
    await this.#toWorker();
    await this.worker!.write(chunk);
  }

  async close(): Promise<void> {
    if (this.worker) return this.worker.close();
    const input = concat(this.#held, this.#heldBytes);
    this.#held = [];
    let out: Uint8Array[] | null;
    try {
      out = decodeFrames(input);
    } catch (err) {
      const e = err instanceof CorruptArchiveError
        ? err
        : corrupt("zstd", err instanceof Error ? err.message : String(err), err);
      this.#q.fail(e);
      throw e;
    }
    if (out === null) {
      this.#held = [input];
      this.#heldBytes = input.length;
      await this.#toWorker();
      return this.worker!.close();
    }
    for (const frame of out) {
      for (let off = 0; off < frame.length; off += OUT_CHUNK) {
        this.#q.push(frame.subarray(off, Math.min(frame.length, off + OUT_CHUNK)));
      }
    }
    this.#q.end();
  }

  async #toWorker(): Promise<void> {
    this.worker = new ZstdDecoder(this.#q);
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    for (const c of held) await this.worker.write(c);
  }

  drained(): void {
    this.worker?.drained();
  }

  abort(): void {
    this.#held = [];
    this.worker?.abort();
  }
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const all = new Uint8Array(length);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  return all;
}

/**
 * Decodes a whole zstd input frame by frame (the one-shot decoder stops at
 * the end of the first frame it decodes), after the frame tracker checked
 * that it ends on a frame boundary. Null when the frames decode to more than
 * {@link INLINE_OUT} bytes; throws on corrupt input.
 */
function decodeFrames(input: Uint8Array): Uint8Array[] | null {
  const frames: [number, number][] = [];
  const tracker = new ZstdFrameTracker();
  tracker.onFrame = (start, end) => frames.push([start, end]);
  tracker.push(input);
  tracker.finish();
  const out: Uint8Array[] = [];
  let room = INLINE_OUT;
  for (const [start, end] of frames) {
    if (room <= 0) return null;
    let frame: Uint8Array;
    try {
      frame = zlib.zstdDecompressSync(input.subarray(start, end), { maxOutputLength: room });
    } catch (err) {
      if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") return null;
      throw err;
    }
    out.push(new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength));
    room -= frame.byteLength;
  }
  return out;
}

/**
 * The format of a stream from its first bytes: gzip `1f 8b`; zstd `28 b5 2f fd`,
 * or a zstd skippable frame `5? 2a 4d 18` first (as `pzstd` writes); else tar.
 */
export function detectFormat(head: Uint8Array): ArchiveFormat {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) {
    return "zstd";
  }
  if (
    head.length >= 4 && (head[0] & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18
  ) {
    return "zstd";
  }
  return "tar";
}

/**
 * A transform that decompresses whatever format the input is in (detected
 * from its magic bytes, so a changed `archive-format` setting never breaks an
 * old cache) and verifies the codec's checksums. Corrupt or truncated input
 * errors the readable side with {@link CorruptArchiveError}. Memory is bounded:
 * the decoder pauses while 8 MiB of output wait for the consumer.
 *
 * `stream` has the shape of a `TransformStream` (a writable and a readable
 * side) for `pipeThrough`. `format` resolves once the first bytes arrived
 * (`tar` for an empty input).
 *
 * @example
 * ```ts
 * const { stream, format } = decompressStream();
 * const tar = body.pipeThrough(stream);
 * log.info("restoring", { format: await format });
 * ```
 */
export function decompressStream(): {
  stream: TransformStream<Uint8Array, Uint8Array>;
  format: Promise<ArchiveFormat>;
} {
  const q = new ChunkQueue();
  let decoder: Decoder | undefined;
  let head: Uint8Array = new Uint8Array(0);
  let cancelled: unknown;
  let resolveFormat!: (f: ArchiveFormat) => void;
  const format = new Promise<ArchiveFormat>((r) => (resolveFormat = r));

  const start = (): Decoder => {
    const f = detectFormat(head);
    resolveFormat(f);
    decoder = f === "gzip" ? new GzipDecoder(q) : f === "zstd" ? new SmallZstdDecoder(q) : new TarDecoder(q);
    return decoder;
  };

  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (cancelled !== undefined) throw cancelled;
      if (!decoder) {
        const merged = new Uint8Array(head.length + chunk.length);
        merged.set(head);
        merged.set(chunk, head.length);
        head = merged;
        if (head.length < 4) return;
        start();
        chunk = head;
        head = new Uint8Array(0);
      }
      await decoder!.write(chunk);
    },
    async close() {
      if (!decoder) {
        const d = start();
        if (head.length > 0) await d.write(head);
      }
      await decoder!.close();
    },
    abort(reason) {
      decoder?.abort();
      resolveFormat("tar");
      q.fail(reason);
    },
  });

  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const c = await q.shift();
      if (c) controller.enqueue(c);
      else {
        controller.close();
        decoder?.drained?.();
      }
    },
    cancel(reason) {
      cancelled = reason ?? new Error("decompression cancelled");
      decoder?.abort();
      q.fail(cancelled);
    },
  }, { highWaterMark: 0 });
  attachProducer(readable, () => (decoder instanceof SmallZstdDecoder ? decoder.worker : decoder?.hash));

  return { stream: { writable, readable } as TransformStream<Uint8Array, Uint8Array>, format };
}
