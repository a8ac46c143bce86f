import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import {
  backoffDelay,
  DEFAULT_RETRY_POLICY,
  IdleTimeoutError,
  parseRetryAfter,
  withRetry,
} from "../lib/storage/transfer/retry.ts";
import { capture } from "./support.ts";

const fast = { retries: 3, baseMs: 1, capMs: 5, idleMs: 0 };
const what = { backend: "test", op: "get", object: "k/m" };

Deno.test("retry: delays are spread by jitter and capped", () => {
  const delays = Array.from({ length: 200 }, () => backoffDelay(3, DEFAULT_RETRY_POLICY));
  const ceiling = DEFAULT_RETRY_POLICY.baseMs * 2 ** 3;
  assert(delays.every((d) => d >= 0 && d < ceiling), "every delay within [0, base·2^n)");
  const distinct = new Set(delays.map((d) => Math.round(d / 100))).size;
  assert(distinct >= 30, `200 clients should not retry in lock-step: ${distinct} distinct 100 ms slots`);
  const spread = Math.max(...delays) - Math.min(...delays);
  assert(spread > ceiling / 2, `spread ${spread} ms over a ceiling of ${ceiling} ms`);
  assertEquals(backoffDelay(30, DEFAULT_RETRY_POLICY, () => 0.999999) < DEFAULT_RETRY_POLICY.capMs, true);
});

Deno.test("retry: Retry-After is honoured (seconds and HTTP date), within the cap", () => {
  assertEquals(parseRetryAfter("3"), 3000);
  assertEquals(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
  assertEquals(parseRetryAfter("soon"), undefined);
  assertEquals(backoffDelay(0, DEFAULT_RETRY_POLICY, () => 0, 3000), 3000);
  assertEquals(backoffDelay(0, DEFAULT_RETRY_POLICY, () => 0, 10 * 60_000), DEFAULT_RETRY_POLICY.capMs);
});

Deno.test("retry: transient failures are retried with a warn line each, then succeed", async () => {
  const { log, lines } = capture();
  let calls = 0;
  const result = await withRetry(() => {
    calls++;
    if (calls < 3) return Promise.reject(new Error(`connection reset ${calls}`));
    return Promise.resolve("ok");
  }, { policy: fast, retryable: () => true, log, what });
  assertEquals([result, calls], ["ok", 3]);
  const warns = lines.filter((l) => l.startsWith("level=warn"));
  assertEquals(warns.length, 2);
  assertStringIncludes(warns[0], "retrying (1/3)");
  assertStringIncludes(warns[0], "connection reset 1");
  assertStringIncludes(warns[1], "object=k/m");
});

Deno.test("retry: a permanent failure is thrown at once; retries stop at the budget", async () => {
  let calls = 0;
  await assertRejects(
    () =>
      withRetry(() => (calls++, Promise.reject(new Error("403"))), {
        policy: fast,
        retryable: () => false,
        what,
      }),
    Error,
    "403",
  );
  assertEquals(calls, 1);
  calls = 0;
  await assertRejects(
    () =>
      withRetry(() => (calls++, Promise.reject(new Error("503"))), {
        policy: fast,
        retryable: () => true,
        what,
      }),
    Error,
    "503",
  );
  assertEquals(calls, fast.retries + 1);
});

Deno.test("retry: an attempt with no progress is aborted by the idle timeout and retried", async () => {
  let calls = 0;
  const result = await withRetry(({ signal, number }) => {
    calls++;
    if (number > 0) return Promise.resolve("second");
    return new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  }, { policy: { ...fast, idleMs: 50 }, retryable: (e) => e instanceof IdleTimeoutError, what });
  assertEquals([result, calls], ["second", 2]);
});

Deno.test("retry: the outer signal stops waiting and further attempts", async () => {
  const controller = new AbortController();
  let calls = 0;
  const run = withRetry(() => {
    calls++;
    if (calls === 1) setTimeout(() => controller.abort(new Error("cancelled")), 10);
    return Promise.reject(new Error("503"));
  }, {
    policy: { ...fast, baseMs: 60_000, capMs: 60_000 },
    retryable: () => true,
    signal: controller.signal,
    what,
    random: () => 0.99,
  });
  await assertRejects(() => run, Error, "cancelled");
  assertEquals(calls, 1);
});

Deno.test("retry: an attempt that never settles after its idle abort is abandoned and retried", async () => {
  const { log, lines } = capture();
  let calls = 0;
  // As a node:http request on a stalled pooled socket in Deno: aborted, it never settles.
  const err = await assertRejects(
    () =>
      withRetry(() => {
        calls++;
        return new Promise<never>(() => {});
      }, { policy: { ...fast, retries: 2, idleMs: 50 }, retryable: () => true, log, what }),
    IdleTimeoutError,
  );
  assertEquals(calls, 3);
  assertStringIncludes(err.message, "no progress");
  assertEquals(lines.filter((l) => l.includes("retrying")).length, 2);
});
