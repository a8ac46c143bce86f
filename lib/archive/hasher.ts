/**
 * The SHA-256 of a tar stream for its integrity trailer, computed off the
 * extracting thread when the stream is big enough to pay for a thread.
 *
 * The extractor hands over every input chunk as it arrives
 * ({@link ChunkHasher.chunk}). The first {@link OFFLOAD_AFTER} bytes are only
 * copied and kept: an archive that ends before that (a small cache) is hashed
 * here from those copies, when the trailer asks, and no worker is started. A
 * longer one starts a hashing worker, sends it the kept copies and, from then
 * on, a copy of each chunk (the chunk itself may be reused by its producer);
 * at most {@link IN_FLIGHT_MAX} bytes of copies wait for the worker, else
 * the extractor waits for it.
 *
 * Hashing is by whole chunks, so the digest must be cut where the trailer
 * begins, which only the extractor learns: whoever hashes keeps the hash state
 * from before each recent chunk, and the extractor names the chunk holding
 * the trailer and sends that chunk's bytes before it (the protocol of
 * {@link StreamProducer.digest}). {@link HASH_WORKER_CODE} is that logic as
 * worker source text, shared with the zstd decoder worker, which hashes its
 * own output the same way.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { CorruptArchiveError } from "./errors.ts";

/** Bytes kept (copied) before a hashing worker is worth its start-up (about 50 ms of the main thread). */
export const OFFLOAD_AFTER = 8 << 20;
/** Copies sent to the hashing worker and not yet hashed, at most. */
const IN_FLIGHT_MAX = 8 << 20;
/** Size of the copy buffers (a bigger chunk gets a buffer of its own size, not reused). */
const COPY_BUFFER = 1 << 20;
/** Copy buffers kept for reuse. */
const SPARE_MAX = 8;
/**
 * How far behind the start of the chunk the reader is in (`hs.acked`) hash
 * states are kept: the trailer header starts at most one PAX header (1 MiB)
 * and a few blocks before the reader's position.
 */
const HASH_KEEP = 8 << 20;

/**
 * Worker source text: the hashing of a stream by chunks with the hash state
 * kept from before each recent chunk. `hs` is null until `startHash()`;
 * `hashOut(u)` hashes the next chunk (not at all when the stream does not
 * begin with a PAX global header: not one of our archives); `hs.acked`
 * is where the chunk the reader is in begins, at least (`ackHashed(n)`
 * advances it; states far behind it are dropped);
 * `digest(m)` answers `{ type: "digest", id, hex, why }` for `m.start` (a
 * chunk start) and `m.head` (that chunk's bytes before the trailer).
 * Needs `createHash` from `node:crypto` in scope.
 */
export const HASH_WORKER_CODE = `
const HASH_KEEP = ${HASH_KEEP};
let hs = null; // { hash, produced, acked, snaps: [{ start, state }], active }
function startHash() {
  hs = { hash: createHash("sha256"), produced: 0, acked: 0, snaps: [], active: undefined };
}
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
function ackHashed(n) {
  if (hs === null) return;
  hs.acked += n;
  if (hs.active) trimStates();
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
`;

/** The hashing worker: chunks in (`hash`), `hashed` acknowledgements and digests out. */
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
${HASH_WORKER_CODE}
startHash();
self.onmessage = (e) => {
  const m = e.data;
  if (m.type === "hash") {
    ackHashed(hs.produced - hs.acked); // the reader is in this new chunk now
    hashOut(m.data.subarray(0, m.length));
    self.postMessage({ type: "hashed", n: m.length, data: m.data }, [m.data.buffer]); // back for reuse
  } else if (m.type === "digest") digest(m);
};
`;

let workerUrl: string | undefined;

/**
 * Hashes a stream handed over chunk by chunk (see the module doc); the digest
 * is cut at any chunk start plus that chunk's first bytes. Call
 * {@link ChunkHasher.close} when done (it stops the worker).
 *
 * @example
 * ```ts
 * const h = new ChunkHasher();
 * await h.chunk(a); // stream offset 0
 * await h.chunk(b); // stream offset a.length
 * const hex = await h.digest(a.length, b.subarray(0, 100)); // SHA-256 of a + b[0..100)
 * h.close();
 * ```
 */
export class ChunkHasher {
  /** Copies of the chunks so far (until the worker starts), with their stream offsets. */
  #kept: { start: number; data: Uint8Array }[] = [];
  /** Copy buffers the worker handed back, for the next copies. */
  #spare: Uint8Array[] = [];
  #offset = 0;
  #worker: Worker | undefined;
  #inFlight = 0;
  #wake: (() => void) | undefined;
  #failed: Error | undefined;
  #digests = new Map<number, { resolve: (hex: string) => void; reject: (e: unknown) => void }>();
  #nextDigest = 0;
  #closed = false;

  /** Takes the next chunk of the stream (copied: the caller may reuse it). Await the result: backpressure. */
  chunk(c: Uint8Array): Promise<void> | undefined {
    if (c.length === 0 || this.#closed) return;
    const start = this.#offset;
    this.#offset += c.length;
    if (!this.#worker) {
      this.#kept.push({ start, data: c.slice() });
      if (this.#offset < OFFLOAD_AFTER) return;
      this.#start();
      return;
    }
    let copy = this.#spare.pop();
    if (!copy || copy.length < c.length) copy = new Uint8Array(Math.max(c.length, COPY_BUFFER));
    copy.set(c);
    this.#send(copy, c.length);
    if (this.#inFlight > IN_FLIGHT_MAX) return this.#drain();
  }

  async #drain(): Promise<void> {
    while (this.#inFlight > IN_FLIGHT_MAX / 2 && !this.#failed && !this.#closed) {
      await new Promise<void>((r) => (this.#wake = r));
    }
    if (this.#failed) throw this.#failed;
  }

  #send(copy: Uint8Array, length: number): void {
    this.#inFlight += length;
    this.#worker!.postMessage({ type: "hash", data: copy, length }, [copy.buffer as ArrayBuffer]);
  }

  #start(): void {
    workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    const w = new Worker(workerUrl, { type: "module" });
    this.#worker = w;
    w.onmessage = (e: MessageEvent) => {
      const m = e.data;
      if (m.type === "hashed") {
        this.#inFlight -= m.n;
        if (this.#spare.length < SPARE_MAX && m.data.length === COPY_BUFFER) this.#spare.push(m.data);
        this.#wake?.();
      } else if (m.type === "digest") {
        const pending = this.#digests.get(m.id);
        this.#digests.delete(m.id);
        if (m.hex !== null) pending?.resolve(m.hex);
        else pending?.reject(new CorruptArchiveError(`the archive's SHA-256 cannot be verified: ${m.why}`));
      }
    };
    w.onerror = (e) => {
      e.preventDefault();
      this.#fail(new Error(`the hashing worker failed: ${e.message}`));
    };
    for (const k of this.#kept.splice(0)) this.#send(k.data, k.data.length);
  }

  #fail(err: Error): void {
    this.#failed = err;
    this.#wake?.();
    for (const d of this.#digests.values()) d.reject(err);
    this.#digests.clear();
  }

  /**
   * Hex SHA-256 of the stream's bytes before `chunkStart + head.length`,
   * where `chunkStart` is the offset of a chunk handed over and `head` that
   * chunk's first bytes. Rejects with CorruptArchiveError when the stream was
   * not hashed (it does not begin with a PAX global header) or the chunk's
   * state is no longer kept.
   */
  digest(chunkStart: number, head: Uint8Array): Promise<string> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#worker) {
      const id = this.#nextDigest++;
      const own = head.slice();
      const p = new Promise<string>((resolve, reject) => this.#digests.set(id, { resolve, reject }));
      this.#worker.postMessage({ type: "digest", id, start: chunkStart, head: own }, [own.buffer]);
      return p;
    }
    const kept = this.#kept;
    const first = kept[0]?.data;
    if (first === undefined || (first.length > 156 && first[156] !== 0x67)) { // the worker's rule
      return Promise.reject(
        new CorruptArchiveError(
          "the archive's SHA-256 cannot be verified: the stream does not begin with a PAX global header",
        ),
      );
    }
    const hash = createHash("sha256");
    let found = false;
    for (const k of kept) {
      if (k.start === chunkStart) {
        found = true;
        break;
      }
      hash.update(k.data);
    }
    if (!found) {
      return Promise.reject(
        new CorruptArchiveError(`the archive's SHA-256 cannot be verified: no chunk at byte ${chunkStart}`),
      );
    }
    return Promise.resolve(hash.update(head).digest("hex"));
  }

  /** Stops the worker (if any) and drops the copies; pending digests reject. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#kept = [];
    this.#worker?.terminate();
    this.#wake?.();
    for (const d of this.#digests.values()) d.reject(new Error("the hasher was closed"));
    this.#digests.clear();
  }
}
