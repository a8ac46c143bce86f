import { assertEquals } from "./assert.ts";
import { idleWatch } from "../lib/storage/transfer/idle.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("idle: fires after a quiet period, not while progress continues", async () => {
  let fired = 0;
  const watch = idleWatch(400, () => fired++);
  for (let i = 0; i < 20; i++) {
    await sleep(30);
    watch.touch(); // ≈600 ms of steady progress: longer than the timeout, never idle
  }
  assertEquals(fired, 0);
  await sleep(900);
  assertEquals(fired, 1);
  watch.stop();
});

Deno.test("idle: stop cancels it, and 0 disables it", async () => {
  let fired = 0;
  const watch = idleWatch(20, () => fired++);
  watch.stop();
  idleWatch(0, () => fired++).touch();
  await sleep(60);
  assertEquals(fired, 0);
});
