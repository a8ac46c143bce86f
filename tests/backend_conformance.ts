/**
 * The shared backend conformance suite (restic-style): the same tests run
 * against every backend's real server. A backend is done when this passes.
 *
 * Usage, in `tests/<backend>_test.ts`:
 * ```ts
 * backendConformance("s3", async () => {
 *   const server = await startSwift();
 *   return { backend: new S3Backend({ ...options, listPageSize: 7 }), teardown: () => server.stop() };
 * });
 * ```
 * The factory should configure a small list page size (≤ 10) so paging is
 * exercised, and small parts/blocks (≤ 5 MiB) so multi-part uploads are.
 *
 * @module
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { type Backend, isStorageError, NotFoundError } from "../lib/storage/backend.ts";

/** What a conformance factory returns. */
export interface ConformanceSetup {
  backend: Backend;
  teardown?: () => Promise<void>;
  /**
   * What the storage cannot do (the Harness cache service: no object metadata, no delete). The suite then
   * checks the documented behaviour instead: `meta` is `{}`, `delete` rejects with a StorageError.
   */
  lacks?: { metadata?: boolean; delete?: boolean };
}

/** Deterministic pseudo-random bytes (xorshift), so failures are reproducible. */
export function seededBytes(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A stream of `data` in `chunk`-sized pieces. */
export function streamOf(data: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let pos = 0;
  return new ReadableStream({
    pull(controller) {
      if (pos >= data.length) {
        controller.close();
        return;
      }
      controller.enqueue(data.slice(pos, pos + chunk));
      pos += chunk;
    },
  });
}

/** A stream that yields `good` bytes and then errors. */
export function failingStream(good: Uint8Array, error = new Error("source failed mid-stream")) {
  let sent = false;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(good);
        return;
      }
      controller.error(error);
    },
  });
}

/** Reads a whole stream into memory (tests only). */
export async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function getBytes(backend: Backend, name: string): Promise<Uint8Array> {
  return readAll(await backend.get(name));
}

async function listNames(backend: Backend, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const info of backend.list(prefix)) names.push(info.name);
  return names.sort();
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Registers the conformance tests for one backend. `setup` is called once;
 * every test works under its own random prefix, removed at the end.
 * `ignore` reports the test as skipped (e.g. cloud credentials absent).
 */
export function backendConformance(
  name: string,
  setup: () => Promise<ConformanceSetup>,
  options: { ignore?: boolean } = {},
): void {
  Deno.test({
    name: `${name}: backend conformance`,
    ignore: options.ignore ?? false,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const { backend, teardown, lacks = {} } = await setup();
      const run = crypto.randomUUID().slice(0, 8);
      const p = (s: string) => `conf-${run}/${s}`;
      try {
        await t.step("put/get round trip of a small object with metadata", async () => {
          const data = new TextEncoder().encode("hello, cache");
          await backend.put(p("small/obj"), streamOf(data), { cicache_format: "tar", cicache_version: "1" });
          assert(sameBytes(await getBytes(backend, p("small/obj")), data), "bytes differ");
          const info = await backend.stat(p("small/obj"));
          assert(info !== null, "stat after put returned null");
          assertEquals(info.name, p("small/obj"));
          assertEquals(info.size, data.length);
          if (lacks.metadata) assertEquals(info.meta, {});
          else {
            assertEquals(info.meta.cicache_format, "tar");
            assertEquals(info.meta.cicache_version, "1");
          }
          assert(Math.abs(info.modified.getTime() - Date.now()) < 10 * 60_000, "modified time is not recent");
        });

        await t.step(
          "metadata with CJK, accents, spaces and look-alikes round-trips (stat and list)",
          async () => {
            const meta = {
              cicache_format: "zstd",
              cicache_root: "/ws/日本/プロジェクト",
              cicache_mount: "Café Ünïcode/node_modules ",
              cicache_plain: "=?utf-8?b?bm90IGVuY29kZWQ=?=",
              cicache_space: " leading and  inner spaces",
            };
            await backend.put(p("meta/obj"), streamOf(new TextEncoder().encode("m")), meta);
            const info = await backend.stat(p("meta/obj"));
            assert(info !== null, "stat after put returned null");
            if (lacks.metadata) {
              assertEquals(info.meta, {}, "a backend without metadata reports none (never mangled values)");
              return;
            }
            for (const [k, v] of Object.entries(meta)) assertEquals(info.meta[k], v, `stat: ${k}`);
            const listed = [];
            for await (const o of backend.list(p("meta/"))) listed.push(o);
            assertEquals(listed.length, 1);
            // S3's listing carries no user metadata; where a listing does, it must be decoded too.
            if (Object.keys(listed[0].meta).length > 0) {
              for (const [k, v] of Object.entries(meta)) assertEquals(listed[0].meta[k], v, `list: ${k}`);
            }
          },
        );

        await t.step("empty object", async () => {
          await backend.put(p("empty"), streamOf(new Uint8Array(0)), {});
          assertEquals((await getBytes(backend, p("empty"))).length, 0);
          assertEquals((await backend.stat(p("empty")))?.size, 0);
        });

        await t.step("multi-MB object in odd-sized chunks", async () => {
          const data = seededBytes(12 * 1024 * 1024 + 12345, 7);
          await backend.put(p("big/obj"), streamOf(data, 100_003), {});
          const got = await getBytes(backend, p("big/obj"));
          assertEquals(got.length, data.length);
          assert(sameBytes(got, data), "multi-MB bytes differ");
          assertEquals((await backend.stat(p("big/obj")))?.size, data.length);
        });

        await t.step(
          "chunks handed back through release are reused at once; the object is intact",
          async () => {
            // A producer that overwrites a released chunk right away (as the packer and the compressor do):
            // a backend that released a chunk it still needed would store the poison bytes.
            const data = seededBytes(9 * 1024 * 1024 + 777, 11);
            const size = 100_003;
            const free: Uint8Array[] = [];
            let pos = 0;
            let released = 0;
            const body = new ReadableStream<Uint8Array>({
              pull(controller) {
                if (pos >= data.length) return controller.close();
                const n = Math.min(size, data.length - pos);
                const chunk = (free.pop() ?? new Uint8Array(size)).subarray(0, n);
                chunk.set(data.subarray(pos, pos + n));
                pos += n;
                controller.enqueue(chunk);
              },
            });
            await backend.put(p("released/obj"), body, {}, {
              release(chunk) {
                released++;
                const whole = new Uint8Array(chunk.buffer, 0, size);
                whole.fill(0xee);
                free.push(whole);
              },
            });
            const got = await getBytes(backend, p("released/obj"));
            assertEquals(got.length, data.length);
            assert(sameBytes(got, data), `bytes differ after ${released} released chunks were overwritten`);
          },
        );

        await t.step("names with spaces, plus signs and deep nesting", async () => {
          const n = p("k e y/sub dir/a+b=c/node_modules/.pnpm");
          await backend.put(n, streamOf(new TextEncoder().encode("x")), {});
          assertEquals(new TextDecoder().decode(await getBytes(backend, n)), "x");
          assertEquals(await listNames(backend, p("k e y/")), [n]);
        });

        await t.step("overwrite replaces the object", async () => {
          await backend.put(p("over"), streamOf(new TextEncoder().encode("first")), {});
          await backend.put(p("over"), streamOf(new TextEncoder().encode("second!")), {});
          assertEquals(new TextDecoder().decode(await getBytes(backend, p("over"))), "second!");
        });

        await t.step("stat of a missing object is null", async () => {
          assertEquals(await backend.stat(p("missing/obj")), null);
        });

        await t.step("get of a missing object throws NotFoundError", async () => {
          const err = await assertRejects(() => backend.get(p("missing/obj")));
          assert(err instanceof NotFoundError, `expected NotFoundError, got ${err}`);
          assert(isStorageError(err, "NotFound"));
        });

        await t.step("list is a plain prefix match and pages", async () => {
          const names = [
            ...Array.from({ length: 23 }, (_, i) => p(`list/a/${String(i).padStart(2, "0")}`)),
            p("list/ab/x"),
            p("list/b/y"),
          ];
          for (const n of names) await backend.put(n, streamOf(new TextEncoder().encode(n)), {});
          const underA = await listNames(backend, p("list/a/"));
          assertEquals(underA.length, 23);
          assertEquals(underA, names.slice(0, 23).sort());
          const prefixA = await listNames(backend, p("list/a"));
          assertEquals(prefixA, [...names.slice(0, 23), p("list/ab/x")].sort());
          assertEquals(await listNames(backend, p("list/nothing")), []);
          for await (const info of backend.list(p("list/b/"))) {
            assertEquals(info.name, p("list/b/y"));
            assertEquals(info.size, p("list/b/y").length);
            assert(
              info.modified instanceof Date && !isNaN(info.modified.getTime()),
              "list entry lacks a date",
            );
          }
        });

        await t.step(
          lacks.delete ? "delete is refused clearly" : "delete removes; deleting a missing object is fine",
          async () => {
            if (lacks.delete) {
              await backend.put(p("del/obj"), streamOf(new TextEncoder().encode("bye")), {});
              const err = await assertRejects(() => backend.delete(p("del/obj")));
              assert(isStorageError(err), `expected a StorageError, got ${err}`);
              assertEquals((await backend.stat(p("del/obj")))?.size, 3);
              return;
            }
            await backend.put(p("del/obj"), streamOf(new TextEncoder().encode("bye")), {});
            await backend.delete(p("del/obj"));
            assertEquals(await backend.stat(p("del/obj")), null);
            await assertRejects(() => backend.get(p("del/obj")), NotFoundError);
            await backend.delete(p("del/obj"));
            assertEquals(await listNames(backend, p("del/")), []);
          },
        );

        await t.step("a put whose stream fails leaves no object", async () => {
          const err = await assertRejects(() =>
            backend.put(p("atomic/new"), failingStream(seededBytes(6 * 1024 * 1024, 3)), {})
          );
          assert(err instanceof Error);
          assertEquals(await backend.stat(p("atomic/new")), null);
          assertEquals(await listNames(backend, p("atomic/")), []);
        });

        await t.step("a failed put keeps the previous object intact", async () => {
          const old = seededBytes(300_000, 9);
          await backend.put(p("atomic/old"), streamOf(old), { cicache_version: "1" });
          await assertRejects(() =>
            backend.put(p("atomic/old"), failingStream(seededBytes(1024 * 1024, 4)), {})
          );
          assert(sameBytes(await getBytes(backend, p("atomic/old")), old), "old object was damaged");
          assertEquals(await listNames(backend, p("atomic/")), [p("atomic/old")]);
        });

        await t.step("an aborted put leaves no object", async () => {
          const controller = new AbortController();
          let sent = 0;
          const slow = new ReadableStream<Uint8Array>({
            async pull(c) {
              if (sent >= 4) {
                controller.abort(new Error("cancelled by test"));
                await new Promise((r) => setTimeout(r, 50));
              }
              sent++;
              c.enqueue(seededBytes(512 * 1024, sent));
            },
          });
          await assertRejects(() => backend.put(p("abort/obj"), slow, {}, { signal: controller.signal }));
          assertEquals(await backend.stat(p("abort/obj")), null);
        });
      } finally {
        if (!lacks.delete) {
          for await (const info of backend.list(`conf-${run}/`)) await backend.delete(info.name);
        }
        await backend.close?.();
        await teardown?.();
      }
    },
  });
}
