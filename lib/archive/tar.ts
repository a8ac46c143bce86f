/**
 * The tar format: header blocks (ustar with PAX extended headers, GNU long
 * names on read) encoded straight into a caller's buffer, and a streaming
 * reader that hands out entries and their data as slices of the incoming
 * chunks (no copies of file data, bounded memory).
 *
 * Written here rather than taken from `npm:tar-stream` because the archive
 * needs three things that library cannot do: write a PAX global header
 * (typeflag `g`; tar-stream encodes it as a regular file), see global headers
 * and their exact byte offsets on read (the integrity trailer hashes every
 * byte before it), and tell a missing end-of-archive marker from a complete
 * archive (truncation). tar-stream is still used by the tests to craft
 * hostile archives, so both implementations check each other.
 *
 * @module
 */

/** One tar block. */
export const BLOCK = 512;

/** Typeflags this module writes or understands. */
export const TYPE = {
  file: 0x30, // '0'
  oldFile: 0x00, // NUL, pre-POSIX regular file
  hardlink: 0x31, // '1'
  symlink: 0x32, // '2'
  char: 0x33, // '3'
  block: 0x34, // '4'
  dir: 0x35, // '5'
  fifo: 0x36, // '6'
  contiguous: 0x37, // '7'
  paxLocal: 0x78, // 'x'
  paxGlobal: 0x67, // 'g'
  gnuLongName: 0x4c, // 'L'
  gnuLongLink: 0x4b, // 'K'
} as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What {@link writeHeader} needs to describe one entry. */
export interface HeaderFields {
  name: string;
  typeflag: number;
  mode: number;
  size: number;
  /** Seconds since the epoch; a fraction goes to a PAX `mtime` record when `paxTime` is set. */
  mtime: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  linkname?: string;
  /** Write the fractional mtime (and uid/gid beyond ustar range) in PAX records. */
  paxTime?: boolean;
}

/** True when `s` is plain ASCII (fits a ustar field byte for byte). */
function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7e) return false;
  return true;
}

/** Writes an ASCII string into `buf` at `off` (the caller checked the length); returns the sum of its bytes. */
function putAscii(buf: Uint8Array, off: number, s: string): number {
  let sum = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    buf[off + i] = c;
    sum += c;
  }
  return sum;
}

/** The sum of `buf[from..to)`. */
function byteSum(buf: Uint8Array, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += buf[i];
  return sum;
}

/**
 * Writes `value` as zero-padded octal of `width - 1` digits plus NUL (Go's and GNU tar's layout).
 * Digit by digit, no string: it runs several times for every entry. The caller keeps `value`
 * within the field (see {@link octalMax}).
 */
function putOctal(buf: Uint8Array, off: number, width: number, value: number): number {
  let v = Math.floor(value);
  let sum = 0;
  for (let i = off + width - 2; i >= off; i--) {
    const d = v % 8;
    buf[i] = 0x30 + d;
    sum += 0x30 + d;
    v = (v - d) / 8;
  }
  buf[off + width - 1] = 0;
  return sum;
}

/** Largest value an octal field of `width` bytes holds. */
function octalMax(width: number): number {
  return 8 ** (width - 1) - 1;
}

/**
 * Splits `name` into ustar `prefix` (≤155 bytes) and `name` (≤100 bytes) at
 * a slash, or returns null when it cannot be represented (then PAX is used).
 */
function splitUstarName(name: string): [string, string] | null {
  if (name.length <= 100) return ["", name];
  if (name.length > 256) return null;
  let i = name.indexOf("/", name.length - 101);
  while (i !== -1 && i <= 155) {
    if (i > 0 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) {
      return [name.slice(0, i), name.slice(i + 1)];
    }
    i = name.indexOf("/", i + 1);
  }
  return null;
}

/** One PAX record, `"<len> <key>=<value>\n"`, where len counts the whole record. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = encoder.encode(body).length;
  let len = bodyLen + String(bodyLen).length;
  if (String(len).length + bodyLen !== len) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

/** Parses PAX records; malformed input throws (the caller reports a corrupt archive). */
export function parsePax(data: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding some writers leave
    let sp = pos;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = Number(decoder.decode(data.subarray(pos, sp)));
    if (
      !Number.isInteger(len) || len <= sp - pos + 1 || pos + len > data.length || data[pos + len - 1] !== 0x0a
    ) {
      throw new Error(`malformed PAX record at byte ${pos}`);
    }
    const rec = decoder.decode(data.subarray(sp + 1, pos + len - 1));
    const eq = rec.indexOf("=");
    if (eq <= 0) throw new Error(`malformed PAX record at byte ${pos}`);
    out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

/** Number of padding bytes after `size` bytes of data. */
export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/**
 * Fills a 512-byte ustar header at `buf[off..]` (which must be zeroed). The
 * checksum adds up the fields as they are written (the rest is zero), not
 * all 512 bytes again.
 */
function putUstar(
  buf: Uint8Array,
  off: number,
  prefix: string,
  name: string,
  f: HeaderFields,
  size: number,
  typeflag: number,
  linkname: string,
  raw = false,
): void {
  // Checksum: sum of all bytes with the checksum field taken as spaces.
  let sum = 8 * 0x20;
  if (raw) {
    encoder.encodeInto(name, buf.subarray(off, off + 100));
    encoder.encodeInto(prefix, buf.subarray(off + 345, off + 500));
    sum += byteSum(buf, off, off + 100) + byteSum(buf, off + 345, off + 500);
  } else {
    sum += putAscii(buf, off, name);
    sum += putAscii(buf, off + 345, prefix);
  }
  sum += putOctal(buf, off + 100, 8, f.mode & 0o7777);
  sum += putOctal(buf, off + 108, 8, Math.min(f.uid ?? 0, octalMax(8)));
  sum += putOctal(buf, off + 116, 8, Math.min(f.gid ?? 0, octalMax(8)));
  sum += putOctal(buf, off + 124, 12, Math.min(size, octalMax(12)));
  sum += putOctal(buf, off + 136, 12, Math.min(Math.max(Math.floor(f.mtime), 0), octalMax(12)));
  buf[off + 156] = typeflag;
  sum += typeflag;
  sum += putAscii(buf, off + 157, linkname);
  sum += putAscii(buf, off + 257, "ustar\x0000");
  const uname = f.uname ?? "";
  const gname = f.gname ?? "";
  if (uname.length < 32 && isAscii(uname)) sum += putAscii(buf, off + 265, uname);
  if (gname.length < 32 && isAscii(gname)) sum += putAscii(buf, off + 297, gname);
  sum += putOctal(buf, off + 329, 8, 0);
  sum += putOctal(buf, off + 337, 8, 0);
  putOctal(buf, off + 148, 7, sum);
  buf[off + 155] = 0x20;
}

/** Formats seconds with up to 9 fractional digits, trailing zeros dropped (as Go's tar writer). */
function formatPaxTime(t: number): string {
  const s = Math.floor(t);
  const ns = Math.round((t - s) * 1e9);
  if (ns === 0) return String(s);
  return `${s}.${String(ns).padStart(9, "0").replace(/0+$/, "")}`;
}

/**
 * The fields {@link headerSize} last sized and their PAX records: callers
 * size an entry and then write the same fields, and the records (name
 * checks, splitting) are the costly part of a small file's header.
 */
let sized: { f: HeaderFields; pax: string } | undefined;

/** {@link paxRecordsFor}, reusing what {@link headerSize} found for the same fields. */
function paxOf(f: HeaderFields): string {
  if (sized?.f === f) return sized.pax;
  const pax = paxRecordsFor(f);
  sized = { f, pax };
  return pax;
}

/**
 * The bytes {@link writeHeader} will write for `f`: one block, or a PAX
 * extended header (block + records + padding) and then the block.
 */
export function headerSize(f: HeaderFields): number {
  const pax = paxOf(f);
  if (pax === "") return BLOCK;
  const n = encoder.encode(pax).length;
  return BLOCK + n + padding(n) + BLOCK;
}

/** The PAX records `f` needs, or "" when plain ustar holds it. */
function paxRecordsFor(f: HeaderFields): string {
  let pax = "";
  if (!isAscii(f.name) || splitUstarName(f.name) === null) pax += paxRecord("path", f.name);
  const link = f.linkname ?? "";
  if (link.length > 100 || !isAscii(link)) pax += paxRecord("linkpath", link);
  if (f.size > octalMax(12)) pax += paxRecord("size", String(f.size));
  if ((f.uid ?? 0) > octalMax(8)) pax += paxRecord("uid", String(f.uid));
  if ((f.gid ?? 0) > octalMax(8)) pax += paxRecord("gid", String(f.gid));
  if (f.uname && (f.uname.length >= 32 || !isAscii(f.uname))) pax += paxRecord("uname", f.uname);
  if (f.gname && (f.gname.length >= 32 || !isAscii(f.gname))) pax += paxRecord("gname", f.gname);
  if ((f.paxTime && f.mtime !== Math.floor(f.mtime)) || f.mtime < 0 || f.mtime > octalMax(12)) {
    pax += paxRecord("mtime", formatPaxTime(f.mtime));
  }
  return pax;
}

/**
 * Writes the header of one entry into `buf` at `off` (the region must be
 * zeroed and `headerSize(f)` bytes long) and returns the bytes written.
 * Names that do not fit ustar (or are not ASCII) go into a PAX `x` header.
 *
 * @example
 * ```ts
 * const f = { name: "/w/a.txt", typeflag: TYPE.file, mode: 0o644, size: 3, mtime: 0 };
 * const buf = new Uint8Array(headerSize(f));
 * writeHeader(buf, 0, f);
 * ```
 */
export function writeHeader(buf: Uint8Array, off: number, f: HeaderFields): number {
  const pax = paxOf(f);
  const link = f.linkname ?? "";
  let pos = off;
  let prefix = "";
  let name = f.name;
  let linkname = link;
  if (pax !== "") {
    const data = encoder.encode(pax);
    putUstar(buf, pos, "", "PaxHeader", { ...f, uname: "", gname: "" }, data.length, TYPE.paxLocal, "");
    pos += BLOCK;
    buf.set(data, pos);
    pos += data.length + padding(data.length);
    // The ustar fields still get a best-effort (ASCII, truncated) value for old readers.
    name = asciiFallback(f.name, 100);
    if (linkname.length > 100 || !isAscii(linkname)) linkname = asciiFallback(link, 100);
  }
  const split = splitUstarName(name);
  // Without PAX records the name is ASCII already (paxRecordsFor checked it).
  if (split && (pax === "" || isAscii(name))) [prefix, name] = split;
  else name = asciiFallback(name, 100);
  putUstar(buf, pos, prefix, name, f, f.size, f.typeflag, linkname);
  return pos + BLOCK - off;
}

function asciiFallback(s: string, max: number): string {
  // deno-lint-ignore no-control-regex
  const a = s.replace(/[^\x00-\x7e]/g, "_");
  return a.length <= max ? a : a.slice(a.length - max);
}

/**
 * A complete PAX global header (`g`) carrying `records`, named `name`
 * (written raw into the ustar name/prefix fields, so long absolute names
 * stay absolute for readers that look at the name, like the Go plugin).
 *
 * @example
 * ```ts
 * const bytes = globalHeader("/w/node_modules/pax_global_header", { "cicache.version": "1" });
 * ```
 */
export function globalHeader(name: string, records: Record<string, string>): Uint8Array {
  let body = "";
  for (const [k, v] of Object.entries(records)) body += paxRecord(k, v);
  const data = encoder.encode(body);
  const out = new Uint8Array(BLOCK + data.length + padding(data.length));
  let prefix = "";
  let base = name;
  const bytes = encoder.encode(name).length;
  if (bytes > 100) {
    const i = name.lastIndexOf("/");
    prefix = name.slice(0, i);
    base = name.slice(i + 1);
    if (encoder.encode(prefix).length > 155) {
      prefix = "";
      base = name.startsWith("/") ? "/pax_global_header" : "pax_global_header";
    }
  }
  putUstar(
    out,
    0,
    prefix,
    base,
    { name, typeflag: TYPE.paxGlobal, mode: 0o644, size: 0, mtime: 0 },
    data.length,
    TYPE.paxGlobal,
    "",
    true,
  );
  out.set(data, BLOCK);
  return out;
}

/** Two zero blocks: the end-of-archive marker. */
export const END_OF_ARCHIVE: Uint8Array = new Uint8Array(2 * BLOCK);

/** A decoded entry header (after applying PAX and GNU long-name records). */
export interface TarHeader {
  name: string;
  typeflag: number;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Seconds since the epoch, possibly fractional (PAX). */
  mtime: number;
  /** Seconds since the epoch when a PAX `atime` record was present. */
  atime?: number;
  size: number;
  linkname: string;
}

/** Thrown by {@link TarReader} for input that is not a well-formed tar stream. */
export class TarFormatError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TarFormatError";
  }
}

function readString(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return decoder.decode(b.subarray(off, end));
}

function readNumber(b: Uint8Array, off: number, len: number, field: string): number {
  if (b[off] & 0x80) {
    // GNU base-256: big-endian two's complement with the top bit as marker.
    if (b[off] === 0xff) throw new TarFormatError(`negative ${field} in tar header`);
    let v = b[off] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i];
    return v;
  }
  let i = off;
  const end = off + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new TarFormatError(`invalid octal ${field} in tar header`);
    v = v * 8 + (c - 0x30);
    digits++;
  }
  return digits === 0 ? 0 : v;
}

function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

function checksumOk(b: Uint8Array): boolean {
  // The checksum field (148–155) counts as eight spaces. Two plain loops, no branch per byte: this runs
  // for every header (≈1.5 µs each as one loop with the signed sum beside it).
  let unsigned = 8 * 0x20;
  for (let i = 0; i < 148; i++) unsigned += b[i];
  for (let i = 156; i < BLOCK; i++) unsigned += b[i];
  const stored = readNumber(b, 148, 8, "checksum");
  if (stored === unsigned) return true;
  // Some old writers summed the bytes as signed chars: each byte above 127 counts 256 less.
  let high = 0;
  for (let i = 0; i < BLOCK; i++) if (b[i] > 127 && (i < 148 || i >= 156)) high++;
  return high > 0 && stored === unsigned - 256 * high;
}

/** Something that consumes the raw tar bytes as they are read (the integrity hash). */
export interface ByteSink {
  update(bytes: Uint8Array): void;
  /** Called before the reader moves on to the next input chunk (a sink may batch until then). */
  flush?(): void;
}

/** The most PAX bytes accepted for one entry (its `x` headers together, or one global header). */
export const MAX_PAX_BYTES = 1 << 20;
/** The longest GNU long name or long link (`L`/`K` payload) accepted. */
export const MAX_GNU_LONG = 64 << 10;
/** The most extended headers (`x`, `g`, `L`, `K`) accepted in a row before an entry. */
export const MAX_EXTENDED_HEADERS = 16;
/**
 * How far (in stream bytes) the reader must have moved past the end of an
 * input chunk before it hands the chunk to `recycle`. A slice the reader
 * returned is dead once the caller asks for more (the extractor writes it
 * first), except inside `next()`, which keeps the header block it read while
 * it reads that header's PAX data and padding (at most MAX_PAX_BYTES + 2
 * blocks further), and `headerPosition()`'s chunk, where that header began.
 */
const RECYCLE_LAG = MAX_PAX_BYTES + (1 << 20);

/**
 * Streaming tar reader. `next()` returns the next entry header (skipping any
 * unread data of the previous one), `read()` returns the current entry's
 * data piecewise. Every byte read is passed to `sink` in order, except PAX
 * global headers, which go to `onGlobal` first: it returns whether the
 * header's bytes should then be passed to the sink (the integrity trailer
 * is excluded from its own hash).
 *
 * @example
 * ```ts
 * const r = new TarReader(stream.getReader());
 * for (let h = await r.next(); h; h = await r.next()) {
 *   for (let part = await r.read(); part; part = await r.read()) use(part);
 * }
 * ```
 */
export class TarReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #eof = false;
  #remaining = 0; // data bytes of the current entry not yet read
  #pad = 0; // padding after the current entry's data
  #sink?: ByteSink;
  #onGlobal?: (records: Record<string, string>) => boolean;
  /** Offset of the next unread byte in the tar stream. */
  offset = 0;
  /** True once the end-of-archive marker was read. */
  ended = false;
  /** The input chunk the header being read begins in, its stream offset, and the header's offset. */
  #headerChunk: Uint8Array = this.#chunk;
  #headerChunkStart = 0;
  #headerStart = 0;
  #recycle?: (chunk: Uint8Array) => void;
  /** Spent input chunks not yet recycled, with the stream offset where each ended. */
  #spent: { chunk: Uint8Array; end: number }[] = [];

  /**
   * `recycle`, when given, receives every input chunk once no slice of it
   * can be in use any more (RECYCLE_LAG bytes later), for the producer to
   * reuse its memory (see producer.ts). Only for a caller that uses every
   * slice `read()`/`readWhole()` returned before it calls the reader again.
   */
  constructor(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    sink?: ByteSink,
    onGlobal?: (records: Record<string, string>) => boolean,
    recycle?: (chunk: Uint8Array) => void,
  ) {
    this.#reader = reader;
    this.#sink = sink;
    this.#onGlobal = onGlobal;
    this.#recycle = recycle;
  }

  /** Makes at least one unread byte available; false at end of input. */
  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#chunk.length) {
      if (this.#eof) return false;
      this.#sink?.flush?.();
      if (this.#recycle) this.#spend();
      const { value, done } = await this.#reader.read();
      if (done) {
        this.#eof = true;
        return false;
      }
      this.#chunk = value;
      this.#pos = 0;
    }
    return true;
  }

  /** Queues the chunk just used up and recycles those far enough behind (see RECYCLE_LAG). */
  #spend(): void {
    if (this.#chunk.length > 0) this.#spent.push({ chunk: this.#chunk, end: this.offset });
    while (this.#spent.length > 0 && this.#spent[0].end + RECYCLE_LAG <= this.offset) {
      this.#recycle!(this.#spent.shift()!.chunk);
    }
  }

  /** Takes up to `max` bytes as a slice of the current chunk (no copy). */
  async #take(max: number, hash = true): Promise<Uint8Array | null> {
    if (!(await this.#fill())) return null;
    const n = Math.min(max, this.#chunk.length - this.#pos);
    const out = this.#chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    if (hash) this.#sink?.update(out);
    return out;
  }

  /** Reads exactly `n` bytes into a new buffer; throws on early end. */
  async #exact(n: number, what: string, hash = true): Promise<Uint8Array> {
    const first = await this.#take(n, hash);
    if (first && first.length === n) return first;
    const out = new Uint8Array(n);
    let got = 0;
    if (first) {
      out.set(first);
      got = first.length;
    }
    while (got < n) {
      const part = await this.#take(n - got, hash);
      if (!part) throw new TarFormatError(`unexpected end of tar stream inside ${what} (truncated archive)`);
      out.set(part, got);
      got += part.length;
    }
    return out;
  }

  async #skip(n: number, what: string): Promise<void> {
    while (n > 0) {
      const part = await this.#take(n);
      if (!part) throw new TarFormatError(`unexpected end of tar stream inside ${what} (truncated archive)`);
      n -= part.length;
    }
  }

  /**
   * The current entry's whole (remaining) data as one slice when the input
   * chunk at hand holds all of it, consumed as {@link read} would; else
   * null and nothing consumed. Synchronous: small files take one call.
   */
  readWhole(): Uint8Array | null {
    const n = this.#remaining;
    if (n === 0 || this.#chunk.length - this.#pos < n) return null;
    const out = this.#chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    this.#sink?.update(out);
    this.#remaining = 0;
    return out;
  }

  /** The current entry's next data slice, or null when its data is exhausted. */
  async read(): Promise<Uint8Array | null> {
    if (this.#remaining === 0) return null;
    const part = await this.#take(this.#remaining);
    if (!part) throw new TarFormatError("unexpected end of tar stream inside file data (truncated archive)");
    this.#remaining -= part.length;
    return part;
  }

  /**
   * The next entry, or null after the end-of-archive marker. Input after the
   * marker (record padding) is read and discarded, so a decompressor ahead
   * of this reader sees its whole input and verifies its checksums.
   */
  async next(): Promise<TarHeader | null> {
    await this.#skip(this.#remaining + this.#pad, "file data");
    this.#remaining = 0;
    this.#pad = 0;
    let pax: Record<string, string> = {};
    let longName: string | undefined;
    let longLink: string | undefined;
    let extended = 0;
    let paxBytes = 0;
    const countExtended = (start: number) => {
      if (++extended > MAX_EXTENDED_HEADERS) {
        throw new TarFormatError(
          `more than ${MAX_EXTENDED_HEADERS} extended headers in a row at byte ${start} (hostile or corrupt archive)`,
        );
      }
    };
    for (;;) {
      const start = this.offset;
      const peek = await this.#take(1, false);
      if (!peek) {
        throw new TarFormatError(
          `tar stream ended at byte ${start} without an end-of-archive marker (truncated archive)`,
        );
      }
      this.#pos -= 1;
      this.offset -= 1;
      this.#headerChunk = this.#chunk;
      this.#headerChunkStart = start - this.#pos;
      this.#headerStart = start;
      const block = await this.#exact(BLOCK, "a header", false);
      const typeflag = block[156];
      if (typeflag === TYPE.paxGlobal) {
        if (!checksumOk(block)) {
          throw new TarFormatError(`bad header checksum at byte ${start} (corrupt archive)`);
        }
        countExtended(start);
        const size = readNumber(block, 124, 12, "size");
        if (size > MAX_PAX_BYTES) {
          throw new TarFormatError(`PAX global header of ${size} bytes at byte ${start} is too large`);
        }
        const data = await this.#exact(size, "a PAX global header", false);
        const pad = await this.#exact(padding(size), "a PAX global header", false);
        let records: Record<string, string>;
        try {
          records = parsePax(data);
        } catch (err) {
          throw new TarFormatError(`${(err as Error).message} in a PAX global header`, { cause: err });
        }
        const hash = this.#onGlobal ? this.#onGlobal(records) : true;
        if (hash && this.#sink) {
          this.#sink.update(block);
          this.#sink.update(data);
          this.#sink.update(pad);
        }
        continue;
      }
      this.#sink?.update(block);
      if (isZeroBlock(block)) {
        // The marker is two zero blocks; a cut inside the second one is still a truncated stream.
        const second = await this.#exact(BLOCK, "the end-of-archive marker", false);
        if (!isZeroBlock(second)) {
          throw new TarFormatError(`data after a zero block at byte ${start} (corrupt archive)`);
        }
        this.ended = true;
        // Drain everything after the marker (GNU tar pads to 10 KiB records).
        while (await this.#take(Infinity, false));
        return null;
      }
      if (!checksumOk(block)) {
        throw new TarFormatError(`bad header checksum at byte ${start} (corrupt archive)`);
      }
      const size = readNumber(block, 124, 12, "size");
      if (typeflag === TYPE.paxLocal || typeflag === TYPE.gnuLongName || typeflag === TYPE.gnuLongLink) {
        countExtended(start);
        if (typeflag === TYPE.paxLocal) {
          paxBytes += size;
          if (paxBytes > MAX_PAX_BYTES) {
            throw new TarFormatError(
              `PAX headers of more than ${MAX_PAX_BYTES} bytes for one entry at byte ${start} (hostile or corrupt archive)`,
            );
          }
        } else if (size > MAX_GNU_LONG) {
          throw new TarFormatError(
            `GNU long name or link of ${size} bytes at byte ${start} is longer than ${MAX_GNU_LONG} (hostile or corrupt archive)`,
          );
        }
        const data = await this.#exact(size, "an extended header");
        await this.#skip(padding(size), "an extended header");
        if (typeflag === TYPE.paxLocal) {
          try {
            pax = { ...pax, ...parsePax(data) };
          } catch (err) {
            throw new TarFormatError(`${(err as Error).message} in a PAX header`, { cause: err });
          }
        } else {
          let end = 0;
          while (end < data.length && data[end] !== 0) end++;
          const s = decoder.decode(data.subarray(0, end));
          if (typeflag === TYPE.gnuLongName) longName = s;
          else longLink = s;
        }
        continue;
      }
      if (Object.keys(pax).some((k) => k.startsWith("GNU.sparse")) || typeflag === 0x53 /* 'S' */) {
        throw new TarFormatError("sparse files (GNU tar --sparse) are not supported");
      }
      let name = readString(block, 0, 100);
      const magic = readString(block, 257, 6);
      if (magic === "ustar" && block[345] !== 0) name = `${readString(block, 345, 155)}/${name}`;
      const h: TarHeader = {
        name: pax.path ?? longName ?? name,
        typeflag,
        mode: readNumber(block, 100, 8, "mode") & 0o7777,
        uid: pax.uid !== undefined ? Number(pax.uid) : readNumber(block, 108, 8, "uid"),
        gid: pax.gid !== undefined ? Number(pax.gid) : readNumber(block, 116, 8, "gid"),
        uname: pax.uname ?? readString(block, 265, 32),
        gname: pax.gname ?? readString(block, 297, 32),
        mtime: pax.mtime !== undefined ? Number(pax.mtime) : readNumber(block, 136, 12, "mtime"),
        atime: pax.atime !== undefined ? Number(pax.atime) : undefined,
        size: pax.size !== undefined ? Number(pax.size) : size,
        linkname: pax.linkpath ?? longLink ?? readString(block, 157, 100),
      };
      if (!Number.isSafeInteger(h.size) || h.size < 0) {
        throw new TarFormatError(`invalid size in the tar header of ${JSON.stringify(h.name)}`);
      }
      if (!Number.isFinite(h.mtime)) h.mtime = 0;
      // Old archives mark directories by a trailing slash on a regular-file entry.
      if ((typeflag === TYPE.file || typeflag === TYPE.oldFile) && h.name.endsWith("/")) {
        h.typeflag = TYPE.dir;
      }
      const hasData = h.typeflag !== TYPE.dir && h.typeflag !== TYPE.symlink &&
        h.typeflag !== TYPE.hardlink &&
        h.typeflag !== TYPE.char && h.typeflag !== TYPE.block && h.typeflag !== TYPE.fifo;
      this.#remaining = hasData ? h.size : 0;
      this.#pad = hasData ? padding(h.size) : 0;
      if (!hasData) h.size = 0;
      return h;
    }
  }

  /**
   * Where the header being read (or the last one read) begins: the input
   * chunk it begins in as `chunkStart` (that chunk's stream offset) and
   * `head` (the chunk's bytes before the header). For `onGlobal`, which
   * wants the digest of the bytes before the trailer header from a producer
   * that hashed the stream by its chunks (see producer.ts).
   */
  headerPosition(): { chunkStart: number; head: Uint8Array } {
    const head = this.#headerChunk.subarray(0, this.#headerStart - this.#headerChunkStart);
    return { chunkStart: this.#headerChunkStart, head };
  }

  /** Releases the underlying reader (after an error). */
  cancel(reason?: unknown): Promise<void> {
    return this.#reader.cancel(reason).catch(() => {});
  }
}
