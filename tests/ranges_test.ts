import { assert, assertEquals, assertRejects } from "./assert.ts";
import { orderedRanges, type RangeSink } from "../lib/storage/transfer/ranges.ts";
import { ShortReadError } from "../lib/storage/transfer/body.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

function data(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + (i >> 8)) & 0xff);
}

/** A read whose chunks the test releases one by one. */
function gatedReads(all: Uint8Array, piece: number) {
  const started: number[] = [];
  const gates: (() => void)[] = [];
  const read = async (start: number, count: number, sink: RangeSink, signal: AbortSignal) => {
    started.push(start);
    const push = sink.begin();
    for (let off = 0; off < count; off += piece) {
      await new Promise<void>((r) => gates.push(r));
      signal.throwIfAborted();
      push(all.slice(start + off, start + Math.min(count, off + piece)));
    }
  };
  const open = () => {
    for (const g of gates.splice(0)) g();
  };
  return { read, started, open };
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of stream) parts.push(c);
  const out = new Uint8Array(parts.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of parts) out.set(c, (off += c.length) - c.length);
  return out;
}

Deno.test({
  ...opts,
  name: "ranges: the head range is handed on as its chunks arrive; at most `concurrency` ranges are read",
  fn: async () => {
    const all = data(10_000);
    const g = gatedReads(all, 100);
    const stream = orderedRanges({
      size: all.length,
      rangeSize: 1000,
      concurrency: 3,
      read: g.read,
      abort: new AbortController(),
    });
    const reader = stream.getReader();
    assertEquals(g.started, [0, 1000, 2000], "three ranges started, no more");
    const first = reader.read();
    g.open(); // one chunk of each range arrives
    const { value } = await first;
    assertEquals(value, all.slice(0, 100), "the first chunk of the head range, before the range is complete");
    assertEquals(g.started.length, 3, "still three: the head is not consumed");
    // Drain the rest, releasing chunks whenever the reader waits.
    const parts = [value!];
    for (;;) {
      const r = reader.read();
      g.open();
      const { value: v, done } = await r;
      if (done) break;
      parts.push(v);
      assert(g.started.length - Math.floor(parts.reduce((n, c) => n + c.length, 0) / 1000) <= 3);
    }
    const joined = new Uint8Array(all.length);
    let off = 0;
    for (const p of parts) joined.set(p, (off += p.length) - p.length);
    assertEquals(joined, all);
    assertEquals(g.started.length, 10);
  },
});

Deno.test({
  ...opts,
  name: "ranges: an abandoned attempt's late begin or bytes cannot move the attempt that replaced it",
  fn: async () => {
    // The retry abandons an aborted attempt without waiting for it (an HTTP client may settle late). Before,
    // all attempts of a range shared one position: a late `begin` or late bytes of the abandoned attempt
    // moved the new attempt's place, and the range came out shifted.
    const all = data(4_000);
    const read = async (start: number, count: number, sink: RangeSink) => {
      const slice = (off: number, n: number) => all.slice(start + off, start + Math.min(count, off + n));
      const stale = sink.begin();
      stale(slice(0, 700)); // attempt 1 got 700 bytes, then was abandoned (aborted, not settled)
      const fresh = sink.begin(); // attempt 2
      fresh(slice(0, 500));
      stale(slice(700, 300)); // attempt 1's late bytes: dropped
      fresh(slice(500, 400));
      sink.begin(); // attempt 1 restarting late would be the next begin: the one after it is current
      await Promise.resolve();
    };
    // With a third begin the second attempt's remaining pushes are dropped: the range must fail short,
    // never hand on wrong bytes. Without it (the normal case) the bytes are exact.
    await assertRejects(
      () => readAll(orderedRanges({ size: all.length, rangeSize: 1000, concurrency: 2, read })),
      ShortReadError,
      "short read",
    );
    const exact = async (start: number, count: number, sink: RangeSink) => {
      const slice = (off: number, n: number) => all.slice(start + off, start + Math.min(count, off + n));
      const stale = sink.begin();
      stale(slice(0, 700));
      const fresh = sink.begin();
      fresh(slice(0, 500));
      stale(slice(700, 300)); // late, dropped: the old code moved the shared position here
      fresh(slice(500, 400));
      fresh(slice(900, count));
      await Promise.resolve();
    };
    assertEquals(
      await readAll(orderedRanges({ size: all.length, rangeSize: 1000, concurrency: 2, read: exact })),
      all,
    );
  },
});

Deno.test({
  ...opts,
  name: "ranges: a retried range skips the bytes already handed on; a failed range fails the stream",
  fn: async () => {
    const all = data(5_000);
    const attempts = new Map<number, number>();
    const read = async (start: number, count: number, sink: RangeSink, signal: AbortSignal) => {
      for (;;) {
        const n = (attempts.get(start) ?? 0) + 1;
        attempts.set(start, n);
        const push = sink.begin();
        try {
          // The first attempt of every range breaks after 300 bytes (a reset), the retry reads it all.
          for (let off = 0; off < count; off += 128) {
            if (n === 1 && off >= 300) throw new ShortReadError("connection reset");
            push(all.slice(start + off, start + Math.min(count, off + 128)));
            await Promise.resolve();
          }
          return;
        } catch (err) {
          if (!(err instanceof ShortReadError) || signal.aborted) throw err;
        }
      }
    };
    const back = await readAll(
      orderedRanges({
        size: all.length,
        rangeSize: 1024,
        concurrency: 2,
        read,
        abort: new AbortController(),
      }),
    );
    assertEquals(back, all);
    assertEquals([...attempts.values()], [2, 2, 2, 2, 2]);

    const abort = new AbortController();
    const failing = async (start: number, count: number, sink: RangeSink, signal: AbortSignal) => {
      const push = sink.begin();
      if (start === 2048) throw new Error("access denied on range 2048");
      for (let off = 0; off < count; off += 512) {
        await new Promise((r) => setTimeout(r, 1));
        signal.throwIfAborted();
        push(all.slice(start + off, start + Math.min(count, off + 512)));
      }
    };
    await assertRejects(
      () =>
        readAll(orderedRanges({ size: all.length, rangeSize: 1024, concurrency: 4, read: failing, abort })),
      Error,
      "access denied on range 2048",
    );
    assert(abort.signal.aborted, "the other ranges are aborted");
  },
});
