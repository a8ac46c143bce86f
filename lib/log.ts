/**
 * The logger: logfmt (default) or JSON lines on stderr, four levels, and
 * redaction of every registered secret value, so no key, token or password
 * reaches a log line (also not with `--debug`).
 *
 * @module
 */

import { redact, registerSecret } from "./storage/transfer/redact.ts";

/** Log levels, most severe first. */
export type Level = "error" | "warn" | "info" | "debug";

const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Structured fields of one log line. */
export type Fields = Record<string, unknown>;

/** Where log lines go (stderr by default; tests capture them). */
export type Sink = (line: string) => void;

const encoder = new TextEncoder();

/** Writes a line to stderr synchronously, so lines never interleave mid-line. */
export const stderrSink: Sink = (line) => {
  writeAll(line + "\n");
};

/** Raw terminal output (status line redraws, caret excerpts): stderr by default. */
export type TerminalWriter = (text: string) => void;

function writeAll(text: string): void {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
}

/** Options for {@link Logger}. */
export interface LoggerOptions {
  level?: Level;
  format?: "logfmt" | "json";
  sink?: Sink;
  /** Secret values to replace by `***` wherever they appear. */
  secrets?: readonly string[];
  /** Fields added to every line. */
  fields?: Fields;
  /** Whether lines go to a terminal (default: stderr is one and no sink was given). */
  terminal?: boolean;
  /** Where raw terminal output goes when `terminal` is true (default: stderr). */
  tty?: TerminalWriter;
}

/** The status line shared by a logger and its children: one segment per active meter. */
interface StatusBoard {
  segments: Map<object, string>;
  drawn: boolean;
}

/**
 * A leveled, structured logger with secret redaction.
 *
 * @example
 * ```ts
 * const log = new Logger({ level: "info", secrets: ["hunter2"] });
 * log.info("saved", { mount: "node_modules", key: "hunter2" }); // key=***
 * ```
 */
export class Logger {
  readonly level: Level;
  readonly format: "logfmt" | "json";
  /** Lines go to an interactive terminal: progress is a redrawn status line instead of periodic lines. */
  readonly terminal: boolean;
  #sink: Sink;
  #tty: TerminalWriter;
  #board: StatusBoard = { segments: new Map(), drawn: false };
  #secrets: string[];
  #fields: Fields;

  constructor(options: LoggerOptions = {}) {
    this.level = options.level ?? "info";
    this.format = options.format ?? "logfmt";
    this.#sink = options.sink ?? stderrSink;
    this.#tty = options.tty ?? writeAll;
    this.terminal = options.terminal ?? (options.sink === undefined && Deno.stderr.isTerminal());
    this.#secrets = [];
    this.#fields = options.fields ?? {};
    for (const s of options.secrets ?? []) this.addSecret(s);
  }

  /** Registers another secret value to redact (e.g. a token read from a file). */
  addSecret(value: string): void {
    registerSecret(value);
    if (value.length >= 4 && !this.#secrets.includes(value)) {
      this.#secrets.push(value);
      this.#secrets.sort((a, b) => b.length - a.length);
    }
  }

  /** A logger that adds `fields` to every line and shares the sink and secrets. */
  with(fields: Fields): Logger {
    const child = new Logger({
      level: this.level,
      format: this.format,
      sink: this.#sink,
      terminal: this.terminal,
      tty: this.#tty,
    });
    child.#board = this.#board;
    child.#secrets = this.#secrets;
    child.#fields = { ...this.#fields, ...fields };
    return child;
  }

  /** True when lines of `level` are written. */
  enabled(level: Level): boolean {
    return RANK[level] <= RANK[this.level];
  }

  error(msg: string, fields?: Fields): void {
    this.#write("error", msg, fields);
  }
  warn(msg: string, fields?: Fields): void {
    this.#write("warn", msg, fields);
  }
  info(msg: string, fields?: Fields): void {
    this.#write("info", msg, fields);
  }
  debug(msg: string, fields?: Fields): void {
    this.#write("debug", msg, fields);
  }

  /**
   * Sets the status line segment of `owner` (`""` removes it) and redraws
   * the line; only on a terminal. Concurrent transfers share the line.
   */
  status(owner: object, text: string): void {
    if (!this.terminal) return;
    if (text === "") this.#board.segments.delete(owner);
    else this.#board.segments.set(owner, this.redact(text));
    this.#redraw();
  }

  /**
   * Writes text as it is, on its own lines, to the terminal (a template
   * excerpt with its caret); nothing when not on a terminal.
   */
  terminalText(text: string): void {
    if (!this.terminal) return;
    this.#clearStatus();
    this.#tty(this.redact(text).replace(/\n?$/, "\n"));
    this.#redraw();
  }

  #clearStatus(): void {
    if (this.#board.drawn) this.#tty("\r\x1b[K");
    this.#board.drawn = false;
  }

  #redraw(): void {
    const line = [...this.#board.segments.values()].join(" · ");
    this.#tty(`\r\x1b[K${line}`);
    this.#board.drawn = line !== "";
  }

  /** Replaces every registered secret and every signed URL's credentials in `text` by `***` (see `redact.ts`). */
  redact(text: string): string {
    return redact(text, this.#secrets);
  }

  #write(level: Level, msg: string, fields?: Fields): void {
    if (!this.enabled(level)) return;
    const record: Fields = { level, ts: new Date().toISOString(), msg, ...this.#fields, ...fields };
    const line = this.format === "json" ? JSON.stringify(record, jsonReplacer) : toLogfmt(record);
    if (this.terminal && this.#board.drawn) {
      // A log line never lands in the middle of the status line: clear it, write, redraw below.
      this.#clearStatus();
      this.#sink(this.redact(line));
      this.#redraw();
      return;
    }
    this.#sink(this.redact(line));
  }
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return errorText(value);
  return value;
}

/**
 * An error's message followed by its causes (`a: b: c`), for log fields, step
 * outputs and the metrics file: the place where errors become text, so
 * credentials are masked here (signed URL queries, registered secrets).
 */
export function errorText(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    const text = cur instanceof Error ? cur.message : String(cur);
    if (text && !parts.some((p) => p.includes(text))) parts.push(text);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return redact(parts.join(": "));
}

function toLogfmt(record: Fields): string {
  return Object.entries(record)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${logfmtValue(v)}`)
    .join(" ");
}

function logfmtValue(v: unknown): string {
  const s = v instanceof Error ? errorText(v) : typeof v === "string" ? v : JSON.stringify(v);
  return s === "" || /[\s"=\\]/.test(s) || /[^\x21-\x7e]/.test(s) ? JSON.stringify(s) : s;
}

/** Formats a byte count for humans (`1.5 MiB`). */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Bytes per second as MiB/s, the unit of the sizes next to it. */
export function mibPerSecond(bytes: number, seconds: number): number {
  return Number((bytes / 1024 / 1024 / Math.max(seconds, 1e-3)).toFixed(1));
}

/** Seconds for humans (`42 s`, `3 min 5 s`). */
function formatSeconds(s: number): string {
  const whole = Math.max(0, Math.round(s));
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

/**
 * Counts bytes flowing through a stream and reports progress: on a terminal
 * a redrawn status line (twice a second: bytes, total and percent when the
 * size is known, rate, ETA), else a log line every `intervalMs` (transfers
 * shorter than that print nothing). Never both.
 *
 * @example
 * ```ts
 * const meter = new ProgressMeter(log, "download", { mount: "node_modules" }, 10_000, info.size);
 * await source.pipeThrough(meter.stream()).pipeTo(sink);
 * meter.stop();
 * ```
 */
export class ProgressMeter {
  bytes = 0;
  readonly started = performance.now();
  #timer?: ReturnType<typeof setInterval>;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
    private readonly fields: Fields = {},
    intervalMs = 10_000,
    /** Expected byte count, when known (a download's object size). */
    readonly total?: number,
  ) {
    const timer = setInterval(() => this.#report(), log.terminal ? 500 : intervalMs);
    Deno.unrefTimer(timer as unknown as number);
    this.#timer = timer;
  }

  /** A pass-through stream that counts bytes. */
  stream(): TransformStream<Uint8Array, Uint8Array> {
    return new TransformStream({
      transform: (chunk, controller) => {
        this.bytes += chunk.byteLength;
        controller.enqueue(chunk);
      },
      flush: () => this.stop(),
    });
  }

  /** Seconds since the meter started. */
  get seconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Stops periodic reporting and removes this meter from the status line. */
  stop(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.log.status(this, "");
  }

  /** The progress figures: bytes, rate, and with a known total the percent and ETA. */
  snapshot(): { bytes: number; mibPerS: number; total?: number; percent?: number; etaS?: number } {
    const rate = this.bytes / Math.max(this.seconds, 1e-3);
    const out: ReturnType<ProgressMeter["snapshot"]> = {
      bytes: this.bytes,
      mibPerS: mibPerSecond(this.bytes, this.seconds),
    };
    if (this.total !== undefined && this.total > 0) {
      out.total = this.total;
      out.percent = Math.min(100, Math.floor((this.bytes / this.total) * 100));
      if (rate > 0) out.etaS = Math.max(0, (this.total - this.bytes) / rate);
    }
    return out;
  }

  #report(): void {
    const p = this.snapshot();
    if (this.log.terminal) {
      const name = Object.values(this.fields)[0] ?? "";
      const amount = p.total !== undefined
        ? `${formatBytes(p.bytes)} / ${formatBytes(p.total)} (${p.percent}%)`
        : formatBytes(p.bytes);
      const eta = p.etaS !== undefined ? `, ETA ${formatSeconds(p.etaS)}` : "";
      this.log.status(this, `${this.what} ${name}: ${amount} at ${p.mibPerS.toFixed(1)} MiB/s${eta}`);
      return;
    }
    this.log.info(`${this.what} in progress`, {
      ...this.fields,
      bytes: p.bytes,
      transferred: formatBytes(p.bytes),
      ...(p.total !== undefined
        ? { total_bytes: p.total, total: formatBytes(p.total), percent: p.percent }
        : {}),
      mib_per_s: p.mibPerS,
      ...(p.etaS !== undefined ? { eta_s: Math.round(p.etaS) } : {}),
    });
  }
}
