import { assert, assertEquals, assertRejects } from "./assert.ts";
import { isReplaced, MAX_RESTARTS, restartingGet } from "../lib/storage/transfer/restart.ts";

const replaced = () => new Error("the object was replaced during the download: restore again");

Deno.test("restart: a download replaced before its first byte restarts and yields the new object whole", async () => {
  let opens = 0;
  const stream = await restartingGet(() => {
    opens++;
    if (opens < 3) return Promise.resolve(new ReadableStream({ pull: (c) => c.error(replaced()) }));
    return Promise.resolve(ReadableStream.from([new Uint8Array([1, 2]), new Uint8Array([3])]));
  }, { backend: "test", object: "k/m" });
  const got = (await Array.fromAsync(stream)).flatMap((c) => [...c]);
  assertEquals([got, opens], [[1, 2, 3], 3]);
  assert(isReplaced(replaced()));
});

Deno.test("restart: once bytes went out, or after the restart budget, the replacement is a clear error (never a mix)", async () => {
  let opens = 0;
  const late = await restartingGet(() => {
    opens++;
    let sent = false;
    return Promise.resolve(
      new ReadableStream<Uint8Array>({
        pull(c) {
          if (!sent) {
            sent = true;
            return c.enqueue(new Uint8Array([9]));
          }
          c.error(replaced());
        },
      }),
    );
  }, { backend: "test", object: "k/m" });
  await assertRejects(() => Array.fromAsync(late), Error, "replaced during the download");
  assertEquals(opens, 1);
  opens = 0;
  const always = await restartingGet(() => {
    opens++;
    return Promise.resolve(new ReadableStream({ pull: (c) => c.error(replaced()) }));
  }, { backend: "test", object: "k/m" });
  await assertRejects(() => Array.fromAsync(always), Error, "replaced during the download");
  assertEquals(opens, MAX_RESTARTS + 1);
});
