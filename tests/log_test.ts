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
