import { assert, assertEquals, assertMatch, assertRejects, assertThrows } from "./assert.ts";
import {
  compressStream,
  CorruptArchiveError,
  decompressStream,
  detectFormat,
} from "../lib/archive/compression.ts";
import { bytes, collect, countingWorkers, sh, streamOf, tempDir } from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

async function roundTrip(data: Uint8Array, format: "tar" | "gzip" | "zstd", level: number) {
  const packed = await collect(streamOf(data).pipeThrough(compressStream(format, level)));
  const { stream, format: detected } = decompressStream();
  const back = await collect(streamOf(packed, 100_000).pipeThrough(stream));
  return { packed, back, detected: await detected };
}

// 9 MiB: three parallel blocks (4 MiB each), so frame/member boundaries are crossed.
const sample = new Uint8Array(9 * 1024 * 1024 + 17);
sample.set(bytes(3 * 1024 * 1024, 5), 0);
for (let i = 3 * 1024 * 1024; i < sample.length; i++) sample[i] = (i >> 7) & 0xff;

for (
  const [format, level] of [["tar", -1], ["gzip", -1], ["gzip", 1], ["gzip", 9], ["zstd", -1], ["zstd", 1], [
    "zstd",
    19,
  ]] as const
) {
  Deno.test({
    ...opts,
    name: `compression: ${format} level ${level} round trips and is detected`,
    fn: async () => {
      const { packed, back, detected } = await roundTrip(sample, format, level);
      assertEquals(detected, format);
      assertEquals(back.length, sample.length);
      assert(back.every((b, i) => b === sample[i]), "identical bytes");
      if (format !== "tar") assert(packed.length < sample.length, "compressed");
    },
  });
}

Deno.test({
  ...opts,
  name: "compression: multi-frame zstd / multi-member gzip output is read by the zstd and gzip tools",
  fn: async () => {
    const { dir, cleanup } = await tempDir("compression");
    try {
      await Deno.writeFile(`${dir}/plain`, sample);
      for (const format of ["zstd", "gzip"] as const) {
        await Deno.writeFile(
          `${dir}/c`,
          await collect(streamOf(sample).pipeThrough(compressStream(format, -1))),
        );
        const r = await sh(`${format === "zstd" ? "zstd -q -dc" : "gzip -dc"} c | cmp - plain`, dir);
        assertEquals(r.code, 0, r.stderr);
      }
      const l = await sh("zstd -q -c -3 plain > c && zstd -lv c", dir);
      assertEquals(l.code, 0);
      // and the other way: the tools' output decompresses with ours
      for (const cmd of ["zstd -q -c -T0 plain", "gzip -c plain"]) {
        const made = await sh(`${cmd} > tool-out`, dir);
        assertEquals(made.code, 0);
        const { stream } = decompressStream();
        const back = await collect(streamOf(await Deno.readFile(`${dir}/tool-out`)).pipeThrough(stream));
        assertEquals(back.length, sample.length, cmd);
      }
    } finally {
      await cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "compression: empty input gives a valid empty stream in every format",
  fn: async () => {
    for (const format of ["tar", "gzip", "zstd"] as const) {
      const { back } = await roundTrip(new Uint8Array(0), format, -1);
      assertEquals(back.length, 0, format);
    }
  },
});

Deno.test({
  ...opts,
  name: "compression: an archive that fits one block is compressed without a worker, into one checked frame",
  fn: async () => {
    const { dir, cleanup } = await tempDir("compression");
    try {
      for (const size of [1, 1 << 20, (4 << 20) - 1, 4 << 20, (4 << 20) + 1]) {
        const input = sample.subarray(0, size);
        await Deno.writeFile(`${dir}/plain`, input);
        for (const format of ["zstd", "gzip"] as const) {
          const { result: packed, started } = await countingWorkers(() =>
            collect(streamOf(input).pipeThrough(compressStream(format, -1)))
          );
          assertEquals(started > 0, size >= 4 << 20, `${format} ${size}: ${started} workers started`);
          await Deno.writeFile(`${dir}/c`, packed);
          const check = format === "zstd"
            ? "zstd -q -dc c | cmp - plain && zstd -lv c"
            : "gzip -dc c | cmp - plain";
          const r = await sh(check, dir);
          assertEquals(r.code, 0, `${format} ${size}: ${r.stderr}`);
          if (format === "zstd") {
            assertMatch(r.stdout, /Check: XXH64/, "a content checksum");
            const frames = Number(/# Zstandard Frames: *(\d+)/.exec(r.stdout)?.[1]);
            assertEquals(frames, size <= 4 << 20 ? 1 : 2, `${size}: frames`);
          }
        }
      }
    } finally {
      await cleanup();
    }
  },
});

Deno.test("compression: detectFormat reads the magic bytes", () => {
  assertEquals(detectFormat(new Uint8Array([0x1f, 0x8b, 8, 0])), "gzip");
  assertEquals(detectFormat(new Uint8Array([0x28, 0xb5, 0x2f, 0xfd])), "zstd");
  assertEquals(detectFormat(new Uint8Array([0x50, 0x2a, 0x4d, 0x18])), "zstd", "a skippable frame");
  assertEquals(detectFormat(new Uint8Array([0x5f, 0x2a, 0x4d, 0x18])), "zstd", "a skippable frame");
  assertEquals(detectFormat(new Uint8Array([0x60, 0x2a, 0x4d, 0x18])), "tar");
  assertEquals(detectFormat(new TextEncoder().encode("/harness/node_modules")), "tar");
  assertEquals(detectFormat(new Uint8Array(0)), "tar");
});

Deno.test("compression: invalid gzip levels are refused with the accepted values", () => {
  const err = assertThrows(() => compressStream("gzip", 12), RangeError);
  assert(err.message.includes("0–9"), err.message);
});

Deno.test({
  ...opts,
  name: "compression: truncated zstd (even inside the checksum) and gzip are CorruptArchiveError",
  fn: async () => {
    for (const format of ["zstd", "gzip"] as const) {
      const packed = await collect(streamOf(sample).pipeThrough(compressStream(format, -1)));
      for (
        const cut of [
          5,
          10,
          1000,
          packed.length >> 1,
          packed.length - 1,
          packed.length - 3,
          packed.length - 5,
        ]
      ) {
        const { stream } = decompressStream();
        await assertRejects(
          () => collect(streamOf(packed.subarray(0, cut)).pipeThrough(stream)),
          CorruptArchiveError,
        );
      }
    }
  },
});

Deno.test({
  ...opts,
  name: "compression: a flipped byte is caught by the zstd content checksum and the gzip CRC",
  fn: async () => {
    for (const format of ["zstd", "gzip"] as const) {
      const packed = await collect(streamOf(sample).pipeThrough(compressStream(format, -1)));
      const bad = packed.slice();
      bad[bad.length - 2] ^= 0x10; // inside the last frame's checksum / the last member's ISIZE-CRC
      const { stream } = decompressStream();
      await assertRejects(() => collect(streamOf(bad).pipeThrough(stream)), CorruptArchiveError);
    }
  },
});

Deno.test({
  ...opts,
  name: "compression: decompression memory is bounded: a slow consumer pauses the decoder",
  fn: async () => {
    // 64 MiB of zeros compress to a few KiB; read only the first chunk, then cancel.
    const zeros = new Uint8Array(64 * 1024 * 1024);
    const packed = await collect(streamOf(zeros, 8 << 20).pipeThrough(compressStream("zstd", -1)));
    assert(packed.length < 1 << 20);
    const { stream } = decompressStream();
    const reader = streamOf(packed).pipeThrough(stream).getReader();
    const first = await reader.read();
    assert(first.value && first.value.length > 0);
    await reader.cancel();
  },
});

Deno.test({
  ...opts,
  name:
    "compression: many blocks through few workers (recycled buffers) round trip in order, in every format",
  fn: async () => {
    // 26 MiB of distinct, partly compressible blocks: more blocks than are ever in flight, so block
    // buffers, decoder input buffers and output chunks are all reused or handed over several times.
    const data = new Uint8Array(26 * 1024 * 1024 + 333);
    for (let b = 0; b * (1 << 20) < data.length; b++) {
      const part = b % 3 === 0 ? bytes(1 << 20, b + 1) : new Uint8Array(1 << 20).fill(b);
      data.set(part.subarray(0, Math.min(part.length, data.length - b * (1 << 20))), b * (1 << 20));
    }
    for (const format of ["gzip", "zstd"] as const) {
      const packed = await collect(
        streamOf(data, 300_000).pipeThrough(compressStream(format, 1, { workers: 2 })),
      );
      const { stream } = decompressStream();
      const back = await collect(streamOf(packed, 70_000).pipeThrough(stream));
      assertEquals(back.length, data.length, format);
      let same = true;
      for (let i = 0; i < data.length && same; i++) same = back[i] === data[i];
      assert(same, `${format}: the round trip changed the bytes`);
    }
  },
});

Deno.test({
  name:
    "compression: zstd output released by the consumer is reused for later frames; the stream stays intact",
  ...opts,
  fn: async () => {
    const input = bytes(24 * 1024 * 1024, 11); // random: frames as big as their blocks, 6 frames
    const compressor = compressStream("zstd", -1, { workers: 2 });
    const reader = streamOf(input, 1 << 20).pipeThrough(compressor).getReader();
    const copies: Uint8Array[] = [];
    const buffers: ArrayBufferLike[] = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      copies.push(value.slice()); // "written": the bytes are copied out, then the chunk is handed back
      buffers.push(value.buffer);
      compressor.release(value);
    }
    assert(copies.length >= 6, `${copies.length} frames`);
    // A reused buffer travelled back to a worker: here it is detached (transferred), not garbage.
    const reused = buffers.filter((b) => b.byteLength === 0).length;
    assert(reused > 0, `released buffers are written again (${reused} of ${buffers.length} reused)`);
    const joined = new Uint8Array(copies.reduce((n, c) => n + c.length, 0));
    let off = 0;
    for (const c of copies) joined.set(c, (off += c.length) - c.length);
    const { stream } = decompressStream();
    assertEquals(await collect(streamOf(joined).pipeThrough(stream)), input);
    compressor.release(new Uint8Array(16)); // a chunk it never handed out is ignored
  },
});

/** The window size of every zstd frame in `packed` (walking the frames with the zstd CLI's own listing). */
async function zstdWindows(packed: Uint8Array): Promise<string[]> {
  const { dir, cleanup } = await tempDir("zwin");
  try {
    await Deno.writeFile(`${dir}/a.zst`, packed);
    const t = await sh(`zstd -q -t ${dir}/a.zst && zstd -lv ${dir}/a.zst`);
    assertEquals(t.code, 0, t.stderr);
    return [...t.stdout.matchAll(/Window Size: ([^\n]+)/g)].map((m) => m[1].trim());
  } finally {
    await cleanup();
  }
}

Deno.test({
  ...opts,
  name:
    "compression: the default zstd level uses a 1 MiB window (smaller match tables); explicit other levels keep libzstd's",
  fn: async () => {
    const base = await collect(streamOf(sample).pipeThrough(compressStream("zstd", -1)));
    const same = await collect(streamOf(sample).pipeThrough(compressStream("zstd", 3)));
    assertEquals(same, base, "-1 and 3 are the same level");
    const windows = await zstdWindows(base);
    assert(windows.length > 0, "zstd -lv lists a window size");
    for (const w of windows) assertMatch(w, /\(1048576 B\)/);
    // Level 5's own table has a 2 MiB window for inputs this size: the tuning applies to level 3 only.
    for (
      const w of await zstdWindows(await collect(streamOf(sample).pipeThrough(compressStream("zstd", 5))))
    ) {
      assertMatch(w, /\(2097152 B\)/);
    }
    // The CLI decodes what the default level wrote.
    const { dir, cleanup } = await tempDir("zwin");
    try {
      await Deno.writeFile(`${dir}/a.zst`, base);
      await Deno.writeFile(`${dir}/a.raw`, sample);
      const d = await sh(`zstd -q -dc ${dir}/a.zst | cmp - ${dir}/a.raw`);
      assertEquals(d.code, 0, d.stdout + d.stderr);
    } finally {
      await cleanup();
    }
  },
});

/** Decompresses `packed`, fed in `chunk`-byte pieces. */
function decompress(packed: Uint8Array, chunk = 64 << 10): Promise<Uint8Array> {
  return collect(streamOf(packed, chunk).pipeThrough(decompressStream().stream));
}

Deno.test({
  ...opts,
  name:
    "compression: a small zstd archive is decoded without a worker: one frame, several frames, skippable frames",
  fn: async () => {
    const small = bytes(300 << 10, 3); // random: ≈300 KiB compressed, one frame
    const packed = await collect(streamOf(small).pipeThrough(compressStream("zstd", -1)));
    // 7 MiB of a pattern: two frames (4 MiB blocks), a few KiB compressed, 7 MiB out (below the 8 MiB cap)
    const pattern = new Uint8Array(7 << 20).map((_, i) => (i >> 9) & 0xff);
    const twoFrames = await collect(streamOf(pattern, 1 << 20).pipeThrough(compressStream("zstd", -1)));
    const random = bytes(7 << 20, 8);
    const randomFrames = await collect(streamOf(random, 1 << 20).pipeThrough(compressStream("zstd", -1)));
    const tiny = bytes(1000, 4);
    const tinyFrame = await collect(streamOf(tiny).pipeThrough(compressStream("zstd", -1)));
    const skip = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5]);
    const join = (...parts: Uint8Array[]) => {
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let off = 0;
      for (const p of parts) all.set(p, (off += p.length) - p.length);
      return all;
    };
    for (
      const [what, input, expected] of [
        ["one frame", packed, small],
        ["two frames of the compressor", twoFrames, pattern],
        ["two frames that barely compress (7 MiB of random bytes)", randomFrames, random],
        // The one-shot decoder alone would stop after the first of these.
        [
          "three frames, skippable frames between and after",
          join(packed, skip, tinyFrame, tinyFrame, skip),
          join(small, tiny, tiny),
        ],
      ] as const
    ) {
      for (const chunk of [1000, 64 << 10, 1 << 20]) {
        const { result, started } = await countingWorkers(() => decompress(input, chunk));
        assertEquals(started, 0, `${what}, ${chunk}-byte pieces: workers started`);
        assertEquals(result, expected, `${what}, ${chunk}-byte pieces`);
      }
    }
  },
});

Deno.test({
  ...opts,
  name:
    "compression: a small zstd archive cut anywhere, with a flipped byte or trailing garbage is a CorruptArchiveError, without a worker",
  fn: async () => {
    const small = bytes(200 << 10, 9);
    small.fill(0, 50_000, 120_000); // compressible in part, so blocks of several kinds
    const packed = await collect(streamOf(small).pipeThrough(compressStream("zstd", -1)));
    assert(packed.length < 1 << 20);
    const broken: [string, Uint8Array][] = [];
    for (
      // (Below 4 bytes the input is not recognised as zstd: it goes on as tar, and the tar reader refuses it.)
      const cut of [
        4,
        5,
        8,
        100,
        packed.length >> 1,
        packed.length - 5,
        packed.length - 4,
        packed.length - 1,
      ]
    ) {
      broken.push([`cut at ${cut}/${packed.length}`, packed.subarray(0, cut)]);
    }
    for (const at of [packed.length >> 1, packed.length - 2, 20]) {
      const bad = packed.slice();
      bad[at] ^= 0x10;
      broken.push([`flip at ${at}`, bad]);
    }
    const garbage = new Uint8Array(packed.length + 4);
    garbage.set(packed);
    garbage.set([0x78, 0x78, 0x78, 0x78], packed.length);
    broken.push(["4 bytes of garbage after the frame", garbage]);
    for (const [what, input] of broken) {
      const { result, started } = await countingWorkers(() =>
        decompress(input).then(() => undefined, (e: unknown) => e)
      );
      assert(result instanceof CorruptArchiveError, `${what}: ${result}`);
      assertMatch(result.message, /^zstd stream is corrupt: /, what);
      assertEquals(started, 0, `${what}: workers started`);
    }
  },
});

Deno.test({
  ...opts,
  name:
    "compression: a small zstd input that decodes past 8 MiB (a bomb) goes to the worker and streams, output bounded",
  fn: async () => {
    // 256 MiB of zeros: a few KiB compressed. Decoded inline it would need 256 MiB at once.
    const zeros = new Uint8Array(256 << 20);
    const packed = await collect(streamOf(zeros, 8 << 20).pipeThrough(compressStream("zstd", -1)));
    assert(packed.length < 1 << 20, `${packed.length} bytes compressed`);
    const { result, started } = await countingWorkers(async () => {
      let total = 0;
      let largest = 0;
      let nonZero = false;
      for await (const c of streamOf(packed).pipeThrough(decompressStream().stream)) {
        total += c.length;
        largest = Math.max(largest, c.length);
        nonZero ||= c.some((b) => b !== 0);
      }
      return { total, largest, nonZero };
    });
    assertEquals(result.total, zeros.length);
    assert(!result.nonZero, "zeros out");
    assert(result.largest <= 1 << 20, `chunks of at most 1 MiB, not ${result.largest}`);
    assertEquals(started, 1, "the worker decoded it");
  },
});

Deno.test({
  ...opts,
  name:
    "compression: pzstd's output (a skippable frame before every frame) is detected and decoded, small and large",
  fn: async () => {
    const { dir, cleanup } = await tempDir("pzstd");
    try {
      for (const [what, input] of [["small", sample.subarray(0, 200_000)], ["large", sample]] as const) {
        await Deno.writeFile(`${dir}/plain`, input);
        const r = await sh("pzstd -q -f -p 2 plain -o plain.zst", dir);
        assertEquals(r.code, 0, r.stderr);
        const packed = await Deno.readFile(`${dir}/plain.zst`);
        assertEquals(packed[3], 0x18, `${what}: pzstd begins with a skippable frame`);
        const { stream, format } = decompressStream();
        const back = await collect(streamOf(packed, 100_000).pipeThrough(stream));
        assertEquals(await format, "zstd", what);
        assertEquals(back, input, what);
      }
    } finally {
      await cleanup();
    }
  },
});
