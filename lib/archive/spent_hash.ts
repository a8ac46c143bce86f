/**
 * The integrity digest of a plain (or gzip) tar stream, computed off the
 * extracting thread.
 *
 * A restore extracts on the main thread, which also reads the download; the
 * SHA-256 of the tar bytes (DESIGN §4) costs that thread about 1 s per GB.
 * Here the stage that hands the tar chunks to the reader keeps each chunk
 * until the reader says it is spent (`recycle`, see producer.ts), then a
 * worker hashes it, in stream order: a chunk of 256 KiB or more that is the
 * whole of its buffer (the filesystem backend's 1 MiB reads) is transferred
 * to the worker as it is; smaller ones (fetch's 64 KiB pieces) are copied
 * into 1 MiB buffers first, since a message per small chunk costs more than
 * the copy. When
 * the reader finds the trailer it asks for the digest of the bytes before it
 * (`digest(chunkStart, head)`): the chunks before the trailer's chunk not
 * spent yet are hashed then, and `head` last, so the hash is exactly the
 * bytes before the trailer, without keeping hash states.
 *
 * A small archive starts no worker: the copies are held until 8 MiB have
 * passed, and a digest asked before that is computed on the calling thread.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { CorruptArchiveError } from "./errors.ts";
import type { StreamProducer } from "./producer.ts";

/**
 * A spent chunk at least this large that is the whole of its buffer is sent to the worker as it is
 * (transferred, then handed back: dropped here, or reused as a batch); smaller ones are copied into
 * batches. Worker-side garbage is collected late: buffers left there held 290 MB.
 */
const TRANSFER_MIN = 256 << 10;
/** Size of the buffers the worker hashes. */
const BATCH = 1 << 20;
/** Copied bytes held (unhashed) before the worker starts: a smaller archive is hashed here, at the end. */
const INLINE = 8 << 20;
/** Bytes sent to the worker and not hashed yet before {@link SpentChunkHash.waitBelow} holds the writer. */
const IN_FLIGHT = 16 << 20;
/**
 * Handed-out chunks kept for hashing while the reader has not called them
 * spent. The tar reader spends each chunk at most 2 MiB behind its position
 * and the stage queues at most 8 MiB ahead of it, so this bound is never
 * reached with it; past it the oldest chunks are hashed anyway, and a digest
 * asked for an earlier chunk fails as the decoder worker's does.
 */
const KEEP = 64 << 20;

/** The worker, as source text (a module URL would not survive `deno bundle`/`deno compile`). */
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
const hash = createHash("sha256");
self.onmessage = (e) => {
  const m = e.data;
  try {
    if (m.type === "data") {
      hash.update(m.data.subarray(0, m.length));
      self.postMessage({ type: "hashed", data: m.data, length: m.length }, [m.data.buffer]);
    } else {
      hash.update(m.head);
      self.postMessage({ type: "digest", hex: hash.digest("hex") });
    }
  } catch (err) {
    self.postMessage({ type: "error", message: String(err && err.message ? err.message : err) });
  }
};
`;

let workerUrl: string | undefined;

/**
 * A {@link StreamProducer} for a stage that hands its chunks to the tar
 * reader as they are (no copy on the way): it hashes them once spent, on a
 * worker. Only streams that begin with a PAX global header (our archives)
 * are hashed; others carry no digest to check.
 *
 * @example
 * ```ts
 * const hash = new SpentChunkHash();
 * hash.emitted(chunk); // before the reader can see it, in stream order
 * queue.push(chunk);
 * await hash.waitBelow(); // the worker keeps up
 * ```
 */
export class SpentChunkHash implements StreamProducer {
  /** Undecided until the first chunk; false for a stream that is none of ours. */
  #active: boolean | undefined;
  /** Handed out, not hashed yet, in order; `#keptStart` is the stream offset of the first. */
  #kept: Uint8Array[] = [];
  #keptStart = 0;
  #keptBytes = 0;
  /** The batch being filled, and batches held before the worker starts. */
  #batch: Uint8Array<ArrayBuffer> | undefined;
  #batchLength = 0;
  #held: { data: Uint8Array<ArrayBuffer>; length: number }[] = [];
  #heldBytes = 0;
  #worker: Worker | undefined;
  #inFlight = 0;
  #spare: Uint8Array<ArrayBuffer>[] = [];
  #wake: (() => void)[] = [];
  #digest: PromiseWithResolvers<string> | undefined;
  #error: unknown;
  #stopped = false;
  readonly #transfer: boolean;

  /**
   * `transfer: false` copies every chunk: for a source that may write again into a buffer it handed out
   * whole (node:zlib's output buffers are its own business). Other sources hand each chunk over for good,
   * as web streams require (a byte stream detaches what is enqueued).
   */
  constructor(options: { transfer?: boolean } = {}) {
    this.#transfer = options.transfer ?? true;
  }

  /** Records `chunk` as the next one handed to the reader (call in stream order, before the reader gets it). */
  emitted(chunk: Uint8Array): void {
    if (this.#active === undefined) this.#active = chunk.length <= 156 || chunk[156] === 0x67;
    if (!this.#active || this.#digest || this.#stopped || chunk.length === 0) return;
    this.#kept.push(chunk);
    this.#keptBytes += chunk.length;
    while (this.#keptBytes > KEEP) this.#hashKept();
  }

  /**
   * The reader is done with `chunk` (no view of it is left anywhere, as
   * producer.ts requires): it and every chunk before it are hashed. A large
   * chunk that is the whole of its buffer is transferred (detached here).
   */
  recycle(chunk: Uint8Array): void {
    const at = this.#kept.indexOf(chunk);
    for (let i = 0; i <= at; i++) this.#hashKept();
  }

  digest(chunkStart: number, head: Uint8Array): Promise<string> {
    if (this.#active === false) {
      return Promise.reject(
        new CorruptArchiveError(
          "the archive's digest was asked, but it does not begin with a PAX global header",
        ),
      );
    }
    if (this.#digest) return this.#digest.promise;
    this.#digest = Promise.withResolvers<string>();
    const asked = this.#digest;
    asked.promise.catch(() => {}); // awaited by the reader later, or never after an error
    if (this.#error !== undefined || this.#stopped) {
      asked.reject(this.#error ?? new Error("the archive hash was stopped before its digest was asked"));
      return asked.promise;
    }
    while (this.#kept.length > 0 && this.#keptStart + this.#kept[0].length <= chunkStart) this.#hashKept();
    if (this.#keptStart !== chunkStart) {
      asked.reject(new CorruptArchiveError(`no hash state kept for the chunk at byte ${chunkStart}`));
      this.stop();
      return asked.promise;
    }
    this.#kept = [];
    this.#copy(head);
    if (!this.#worker) {
      const hash = createHash("sha256");
      for (const b of this.#held) hash.update(b.data.subarray(0, b.length));
      if (this.#batch) hash.update(this.#batch.subarray(0, this.#batchLength));
      this.#held = [];
      this.#batch = undefined;
      asked.resolve(hash.digest("hex"));
      return asked.promise;
    }
    this.#ship();
    this.#worker.postMessage({ type: "digest", head: new Uint8Array(0) });
    return asked.promise;
  }

  /** Resolves when the worker is at most {@link IN_FLIGHT} bytes behind (or it failed or was stopped). */
  async waitBelow(): Promise<void> {
    while (this.#inFlight > IN_FLIGHT && this.#error === undefined && !this.#stopped) {
      await new Promise<void>((r) => this.#wake.push(r));
    }
  }

  /** The reader read the whole stream: nothing more to hash unless a digest is pending. */
  drained(): void {
    if (!this.#digest) this.stop();
  }

  /** Ends the worker and drops what is kept (the restore ended or failed); a pending digest rejects. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#worker?.terminate();
    this.#worker = undefined;
    this.#kept = [];
    this.#held = [];
    this.#batch = undefined;
    this.#digest?.reject(new Error("the archive hash was stopped before it answered the digest"));
    for (const w of this.#wake.splice(0)) w();
  }

  #hashKept(): void {
    const chunk = this.#kept.shift();
    if (!chunk) return;
    this.#keptStart += chunk.length;
    this.#keptBytes -= chunk.length;
    if (
      this.#transfer && this.#worker && !this.#digest && chunk.length >= TRANSFER_MIN &&
      chunk.byteOffset === 0 &&
      chunk.buffer.byteLength === chunk.length && !(chunk.buffer instanceof SharedArrayBuffer)
    ) {
      this.#ship();
      this.#post(chunk as Uint8Array<ArrayBuffer>, chunk.length);
      return;
    }
    this.#copy(chunk);
  }

  /** Copies `bytes` into batches; full batches go to the worker (or are held before it starts). */
  #copy(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.length) {
      this.#batch ??= this.#spare.pop() ?? new Uint8Array(BATCH);
      const n = Math.min(bytes.length - off, BATCH - this.#batchLength);
      this.#batch.set(bytes.subarray(off, off + n), this.#batchLength);
      this.#batchLength += n;
      off += n;
      if (this.#batchLength === BATCH) this.#ship();
    }
  }

  /** Sends the current batch on: to the worker, or into the held ones (starting the worker past INLINE). */
  #ship(): void {
    const data = this.#batch;
    const length = this.#batchLength;
    this.#batch = undefined;
    this.#batchLength = 0;
    if (!data || length === 0 || this.#stopped) return;
    if (!this.#worker) {
      this.#held.push({ data, length });
      this.#heldBytes += length;
      if (this.#heldBytes < INLINE || this.#digest) return;
      this.#start();
      for (const b of this.#held.splice(0)) this.#post(b.data, b.length);
      return;
    }
    this.#post(data, length);
  }

  #post(data: Uint8Array<ArrayBuffer>, length: number): void {
    this.#inFlight += length;
    this.#worker!.postMessage({ type: "data", data, length }, [data.buffer]);
  }

  #start(): void {
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    const w = new Worker(workerUrl, { type: "module" });
    w.onmessage = (e: MessageEvent) => {
      const m = e.data;
      if (m.type === "hashed") {
        this.#inFlight -= m.length;
        if (m.data.length === BATCH && this.#spare.length < 4) this.#spare.push(m.data);
        if (this.#inFlight <= IN_FLIGHT) { for (const wake of this.#wake.splice(0)) wake(); }
      } else if (m.type === "digest") {
        this.#digest?.resolve(m.hex);
        this.stop();
      } else {
        this.#fail(new Error(`the archive hash worker failed: ${m.message}`));
      }
    };
    w.onerror = (e) => {
      e.preventDefault();
      this.#fail(new Error(`the archive hash worker failed: ${e.message}`));
    };
    this.#worker = w;
  }

  #fail(err: unknown): void {
    this.#error ??= err;
    this.#digest?.reject(err);
    this.stop();
  }
}
