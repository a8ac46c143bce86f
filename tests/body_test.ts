import { assertEquals, assertRejects } from "./assert.ts";
import { guardedChunks, readRange, ShortReadError, streamRange } from "../lib/storage/transfer/body.ts";

/** A body that sends `chunks` and then stalls forever (as a stalled connection whose abort never arrives). */
function stallingBody(chunks: Uint8Array[]) {
  let cancelled: unknown = "not cancelled";
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < chunks.length) return void c.enqueue(chunks[i++]);
      return new Promise(() => {}); // never settles
    },
    cancel(reason) {
      cancelled = reason;
    },
  }, { highWaterMark: 0 });
  return { stream, cancelled: () => cancelled };
}

Deno.test("body: an abort ends a read pending on a stalled body and cancels it (closing its connection)", async () => {
  const body = stallingBody([new Uint8Array(10), new Uint8Array(5)]);
  const controller = new AbortController();
  let touches = 0;
  const got: number[] = [];
  const reason = new Error("no progress for 1.5 s");
  const reading = (async () => {
    for await (const chunk of guardedChunks(body.stream, controller.signal, () => touches++)) {
      got.push(chunk.length);
      if (got.length === 2) setTimeout(() => controller.abort(reason), 20);
    }
  })();
  const err = await assertRejects(() => reading);
  assertEquals(err, reason);
  assertEquals(got, [10, 5]);
  assertEquals(touches, 2);
  assertEquals(body.cancelled(), reason);
});

Deno.test("body: readRange returns the chunks of an exact range; short and long bodies are retryable errors", async () => {
  const never = new AbortController().signal;
  const ok = await readRange(ReadableStream.from([new Uint8Array(3), new Uint8Array(4)]), 7, never, () => {});
  assertEquals(ok.map((c) => c.length), [3, 4]);
  await assertRejects(
    () => readRange(ReadableStream.from([new Uint8Array(3)]), 7, never, () => {}),
    ShortReadError,
    "short read: 3 of 7",
  );
  await assertRejects(
    () => readRange(ReadableStream.from([new Uint8Array(8)]), 7, never, () => {}),
    ShortReadError,
    "more bytes",
  );
});

Deno.test("body: an attempt that was aborted before its answer came does not restart the range, and its body is cancelled", async () => {
  // The retry abandons an aborted attempt without waiting; when its HTTP client answers late, the attempt
  // must not begin the range again under the attempt that replaced it.
  const body = stallingBody([new Uint8Array(10)]);
  const controller = new AbortController();
  const reason = new Error("no progress for 1.5 s");
  controller.abort(reason);
  let begun = 0;
  const sink = { begin: () => (begun++, () => {}) };
  await assertRejects(
    () => streamRange(body.stream, 10, sink, controller.signal, () => {}),
    Error,
    "no progress",
  );
  assertEquals(begun, 0, "the range was restarted by an abandoned attempt");
  assertEquals(body.cancelled(), reason, "the late body was not cancelled");
});
