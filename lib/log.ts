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
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
};

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
  #secrets: string[];
  #fields: Fields;

  constructor(options: LoggerOptions = {}) {
    this.level = options.level ?? "info";
    this.format = options.format ?? "logfmt";
    this.#sink = options.sink ?? stderrSink;
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
    });
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

  /** Redraws the terminal status line (`""` clears it); only on a terminal. */
  status(text: string): void {
    if (this.terminal) Deno.stderr.writeSync(encoder.encode(`\r\x1b[K${this.redact(text)}`));
  }

  /** Replaces every registered secret and every signed URL's credentials in `text` by `***` (see `redact.ts`). */
  redact(text: string): string {
    return redact(text, this.#secrets);
  }

  #write(level: Level, msg: string, fields?: Fields): void {
    if (!this.enabled(level)) return;
    const record: Fields = { level, ts: new Date().toISOString(), msg, ...this.#fields, ...fields };
    const line = this.format === "json" ? JSON.stringify(record, jsonReplacer) : toLogfmt(record);
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

/**
 * Counts bytes flowing through a stream and reports progress: a redrawn
 * status line on a terminal (twice a second), else a log line every
 * `intervalMs` (transfers shorter than that print nothing).
 *
 * @example
 * ```ts
 * const meter = new ProgressMeter(log, "upload", { mount: "node_modules" });
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

  /** Stops periodic reporting. */
  stop(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#drawn) this.log.status("");
  }

  #drawn = false;

  #report(): void {
    const mbps = this.bytes / 1e6 / Math.max(this.seconds, 1e-3);
    if (this.log.terminal) {
      const name = Object.values(this.fields)[0] ?? "";
      this.log.status(`${this.what} ${name}: ${formatBytes(this.bytes)} at ${mbps.toFixed(1)} MB/s`);
      this.#drawn = true;
      return;
    }
    this.log.info(`${this.what} in progress`, {
      ...this.fields,
      bytes: this.bytes,
      transferred: formatBytes(this.bytes),
      mb_per_s: Number(mbps.toFixed(1)),
    });
  }
}
