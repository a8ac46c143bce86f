import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { errorText, formatBytes, Logger, ProgressMeter } from "../lib/log.ts";

function capture(options: ConstructorParameters<typeof Logger>[0] = {}) {
  const lines: string[] = [];
  return { lines, log: new Logger({ ...options, sink: (l) => lines.push(l) }) };
}

Deno.test("log: logfmt quotes values that need it", () => {
  const { lines, log } = capture();
  log.info("saved cache", { mount: "node_modules", note: 'a "b" c', n: 3, empty: "" });
  assertStringIncludes(lines[0], 'msg="saved cache"');
  assertStringIncludes(lines[0], "mount=node_modules");
  assertStringIncludes(lines[0], 'note="a \\"b\\" c"');
  assertStringIncludes(lines[0], "n=3");
  assertStringIncludes(lines[0], 'empty=""');
  assert(lines[0].startsWith("level=info ts="));
});

Deno.test("log: JSON lines and levels", () => {
  const { lines, log } = capture({ format: "json", level: "warn" });
  log.info("hidden");
  log.warn("shown", { k: 1 });
  log.error("failed", { error: new Error("outer", { cause: new Error("inner") }) });
  assertEquals(lines.length, 2);
  const rec = JSON.parse(lines[0]);
  assertEquals([rec.level, rec.msg, rec.k], ["warn", "shown", 1]);
  assertEquals(JSON.parse(lines[1]).error, "outer: inner");
});

Deno.test("log: secrets are redacted everywhere, also in children and error causes", () => {
  const { lines, log } = capture({ secrets: ["hunter2-secret"] });
  log.addSecret("token-from-file");
  log.with({ user: "hunter2-secret" }).info("x", {
    error: new Error("bad", { cause: "token-from-file rejected" }),
  });
  assertEquals(lines.length, 1);
  assert(!lines[0].includes("hunter2-secret") && !lines[0].includes("token-from-file"), lines[0]);
  assertStringIncludes(lines[0], "***");
});

Deno.test("log: errorText joins causes without repeats", () => {
  assertEquals(errorText(new Error("a: b", { cause: new Error("b") })), "a: b");
  assertEquals(errorText(new Error("a", { cause: new Error("b", { cause: "c" }) })), "a: b: c");
});

Deno.test("log: formatBytes", () => {
  assertEquals(formatBytes(12), "12 B");
  assertEquals(formatBytes(1536), "1.5 KiB");
  assertEquals(formatBytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
});

Deno.test("log: progress lines on long transfers (not a terminal)", async () => {
  const { lines, log } = capture();
  const meter = new ProgressMeter(log, "upload", { mount: "m" }, 20);
  const out = ReadableStream.from([new Uint8Array(1000), new Uint8Array(500)]).pipeThrough(meter.stream());
  await new Promise((r) => setTimeout(r, 60));
  await new Response(out).arrayBuffer();
  meter.stop();
  assertEquals(meter.bytes, 1500);
  assert(lines.some((l) => l.includes("upload in progress") && l.includes("mount=m")), lines.join("\n"));
});

/** A stream that sends `first` bytes, waits `ms`, then sends `second` bytes. */
function slowStream(first: number, ms: number, second: number): ReadableStream<Uint8Array> {
  return ReadableStream.from((async function* () {
    yield new Uint8Array(first);
    await new Promise((r) => setTimeout(r, ms));
    yield new Uint8Array(second);
  })());
}

Deno.test("log: on a terminal, progress is one redrawn status line (bytes, total, percent, rate, ETA)", async () => {
  const lines: string[] = [];
  const tty: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), terminal: true, tty: (t) => tty.push(t) });
  const meter = new ProgressMeter(log, "download", { mount: "node_modules" }, 20, 4 * 1024 * 1024);
  const out = slowStream(1024 * 1024, 1200, 3 * 1024 * 1024).pipeThrough(meter.stream());
  await new Response(out).arrayBuffer();
  assert(tty.length > 0, "the status line was drawn");
  const drawn = tty.find((t) => t.includes("download node_modules"))!;
  assert(drawn.startsWith("\r\x1b[K"), "redrawn in place");
  assert(!drawn.includes("\n"), "a status line never scrolls");
  assertStringIncludes(drawn, "1.0 MiB / 4.0 MiB (25%)");
  assertStringIncludes(drawn, "MiB/s");
  assertStringIncludes(drawn, "ETA");
  assertEquals(lines.filter((l) => l.includes("in progress")), [], "never both: no periodic log lines");
  assertEquals(tty.at(-1), "\r\x1b[K", "cleared when done");
});

Deno.test("log: a log line during a status line clears it first and redraws it after", () => {
  const out: string[] = [];
  const log = new Logger({ sink: (l) => out.push(`LINE ${l}\n`), terminal: true, tty: (t) => out.push(t) });
  const owner = {};
  log.status(owner, "upload m: 1.0 MiB");
  log.info("hello");
  log.status(owner, "");
  const text = out.join("");
  assert(text.indexOf("\r\x1b[K", text.indexOf("1.0 MiB")) < text.indexOf("LINE"), text);
  assert(text.lastIndexOf("upload m: 1.0 MiB") > text.indexOf("LINE"), `redrawn after the line: ${text}`);
});

Deno.test("log: not on a terminal, progress lines carry total, percent, MiB/s and ETA; nothing raw", async () => {
  const lines: string[] = [];
  const tty: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), terminal: false, tty: (t) => tty.push(t) });
  const meter = new ProgressMeter(log, "download", { mount: "m" }, 50, 2000);
  await new Response(slowStream(1000, 300, 1000).pipeThrough(meter.stream())).arrayBuffer();
  const line = lines.find((l) => l.includes("download in progress"));
  assert(line, lines.join("\n"));
  assertStringIncludes(line, "total_bytes=2000");
  assertStringIncludes(line, "percent=50");
  assertStringIncludes(line, "mib_per_s=");
  assertStringIncludes(line, "eta_s=");
  assertEquals(tty, [], "no status line off a terminal");
  log.terminalText("excerpt\n  ^");
  assertEquals(tty, [], "no raw text off a terminal");
});
