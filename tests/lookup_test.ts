/**
 * Lookup only (`lookupCache` in lib/cache/restore.ts, `--lookup-only`):
 * existence is decided by metadata calls, never by downloading. On the
 * filesystem backend a wrapper counts the Backend calls; against Swift (S3),
 * Azurite and the GCS emulator a byte-transparent TCP proxy in front of the
 * server records every HTTP request line, so a GET of object data would show.
 */
import { join } from "node:path";
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { run } from "../main.ts";
import { lookupCache } from "../lib/cache/lookup.ts";
import { createFilesystemBackend } from "../lib/storage/filesystem/backend.ts";
import type { Backend } from "../lib/storage/backend.ts";
import type { OpContext } from "../lib/cache/save.ts";
import { capture, settingsFrom } from "./support.ts";
import { startSwift } from "../scripts/servers/swift.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";
import { startGcs } from "../scripts/servers/gcs.ts";

/** Wraps a backend and counts calls per method. */
function counting(inner: Backend): { backend: Backend; calls: Record<string, number> } {
  const calls: Record<string, number> = { get: 0, stat: 0, list: 0, put: 0, delete: 0 };
  const backend: Backend = Object.create(inner);
  for (const m of ["get", "stat", "list", "put", "delete"] as const) {
    // deno-lint-ignore no-explicit-any
    (backend as any)[m] = (...args: unknown[]) => {
      calls[m]++;
      // deno-lint-ignore no-explicit-any
      return (inner as any)[m](...args);
    };
  }
  return { backend, calls };
}

async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await Deno.mkdir(join(root, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, rel), text);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("lookup: one stat per mount, listings for globs and listing mode, fallback keys, never a get()", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cicache-lookup-" });
  try {
    const work = join(dir, "w");
    const cache = join(dir, "cache");
    await Deno.mkdir(cache);
    await writeFiles(work, { "a/x": "x", "b/y": "y", "pk/p1/out/z": "z", "pk/p2/out/z": "z" });
    const base = { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cache, HOME: dir };
    const sink = () => {};
    assertEquals(
      await run([], {
        ...base,
        PLUGIN_REBUILD: "true",
        PLUGIN_CACHE_KEY: "k-1",
        PLUGIN_MOUNT: "a,b,pk/*/out",
      }, {
        cwd: work,
        sink,
      }),
      0,
    );
    const output = join(dir, "drone-output");
    const env = { ...base, DRONE_OUTPUT: output };
    const { log } = capture();
    const settings = settingsFrom(env, ["restore", "--lookup-only"]);
    const lookup = async (key: string, mounts: string[], restoreKeys: string[] = []) => {
      const { backend, calls } = counting(await createFilesystemBackend(settings, log));
      const ctx: OpContext = { settings, backend, log, key, env, cwd: work };
      await Deno.remove(output).catch(() => {});
      const result = await lookupCache(ctx, mounts, restoreKeys);
      return { result, calls, outputs: await Deno.readTextFile(output) };
    };

    const hit = await lookup("k-1", ["a", "b"]);
    assertEquals(hit.result.hit, true);
    assertEquals(hit.calls, { get: 0, stat: 2, list: 0, put: 0, delete: 0 });
    assertEquals(hit.outputs, "cache_hit=true\ncache_state=complete\ncache_key_matched=k-1\n");

    const partial = await lookup("k-1", ["a", "missing"]);
    assertEquals(partial.result.hit, false, "a missing mount is no full hit");
    assertEquals(partial.calls.get, 0);
    assertEquals(partial.outputs, "cache_hit=false\ncache_state=partial\ncache_key_matched=k-1\n");

    const glob = await lookup("k-1", ["pk/*/out"]);
    assertEquals(glob.result.found.map((f) => f.mount), ["pk/p1/out", "pk/p2/out"]);
    assertEquals(glob.calls, { get: 0, stat: 0, list: 1, put: 0, delete: 0 });

    const listing = await lookup("k-1", []);
    assertEquals(listing.result.found.length, 4);
    assertEquals(listing.calls.get, 0);
    assertEquals(listing.calls.stat, 0, "listing mode inspects no object");

    const fallback = await lookup("k-2", ["a"], ["k-"]);
    assertEquals(fallback.result.match, "fallback");
    assertEquals(fallback.calls.get, 0);
    assertEquals(fallback.outputs, "cache_hit=false\ncache_state=complete\ncache_key_matched=k-1\n");

    const miss = await lookup("nope", ["a"]);
    assertEquals(miss.result.match, "miss");
    assertEquals(miss.outputs, "cache_hit=false\ncache_state=miss\ncache_key_matched=\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lookup: --lookup-only through the CLI restores nothing; a miss fails only with fail-restore-if-key-not-present", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cicache-lookup-" });
  try {
    const work = join(dir, "w");
    const cache = join(dir, "cache");
    await Deno.mkdir(cache);
    await writeFiles(work, { "deps/lib.txt": "lib" });
    const output = join(dir, "out");
    const env = {
      PLUGIN_BACKEND: "filesystem",
      PLUGIN_FILESYSTEM_CACHE_ROOT: cache,
      PLUGIN_CACHE_KEY: "k",
      PLUGIN_MOUNT: "deps",
      DRONE_OUTPUT: output,
    };
    const logs: string[] = [];
    const cli = (extra: Record<string, string>, args: string[] = []) =>
      run(args, { ...env, ...extra }, { cwd: work, sink: (l) => logs.push(l) });
    assertEquals(await cli({ PLUGIN_REBUILD: "true" }), 0);
    await Deno.remove(join(work, "deps"), { recursive: true });
    assertEquals(await cli({ PLUGIN_RESTORE: "true", PLUGIN_LOOKUP_ONLY: "true" }), 0, logs.join("\n"));
    assert(!await exists(join(work, "deps")), "lookup-only restored files");
    assertEquals(
      await Deno.readTextFile(output),
      "cache_hit=true\ncache_state=complete\ncache_key_matched=k\n",
    );
    assertStringIncludes(logs.join("\n"), "nothing downloaded");
    assertEquals(await cli({ PLUGIN_CACHE_KEY: "other" }, ["restore", "--lookup-only"]), 0);
    assertEquals(
      await cli({ PLUGIN_CACHE_KEY: "other", PLUGIN_FAIL_RESTORE_IF_KEY_NOT_PRESENT: "true" }, [
        "restore",
        "--lookup-only",
      ]),
      1,
    );
    assert(!await exists(join(work, "deps")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A byte-transparent TCP proxy that records the request line of every HTTP request it forwards. */
function requestRecorder(target: { hostname: string; port: number }) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: string[] = [];
  const conns: Deno.Conn[] = [];
  const decoder = new TextDecoder();
  const serve = async () => {
    for await (const client of listener) {
      conns.push(client);
      (async () => {
        const upstream = await Deno.connect(target);
        conns.push(upstream);
        const down = upstream.readable.pipeTo(client.writable).catch(() => {});
        const up = client.readable.pipeThrough(
          new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, c) {
              // Lookups send no request bodies: every request line starts a chunk's line.
              for (const m of decoder.decode(chunk).matchAll(/^([A-Z]+) (\S+) HTTP\/1\.1\r$/gm)) {
                requests.push(`${m[1]} ${m[2]}`);
              }
              c.enqueue(chunk);
            },
          }),
        ).pipeTo(upstream.writable).catch(() => {});
        await Promise.all([down, up]);
      })().catch(() => {});
    }
  };
  const done = serve().catch(() => {});
  return {
    endpoint: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    requests,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await done;
    },
  };
}

/** A real server for one backend, and how a GET of object data looks in its request lines. */
interface LookupServer {
  name: string;
  start(): Promise<{ env: Record<string, string>; endpoint: string; stop: () => Promise<void> }>;
  /** True for a request line that downloads object data (not metadata, not a listing). */
  isDataGet(line: string): boolean;
  /** True for the metadata call of one object under the key `lk`. */
  isObjectMeta(line: string): boolean;
  isList(line: string): boolean;
}

const SERVERS: LookupServer[] = [
  {
    name: "s3 (Swift)",
    async start() {
      const s = await startSwift();
      return { env: s.env, endpoint: s.endpoint, stop: s.stop };
    },
    isDataGet: (l) =>
      l.startsWith("GET ") && !l.includes("list-type") && l.split(" ")[1].split("/").length > 2,
    isObjectMeta: (l) => /^HEAD \/[^/]+\/lk\//.test(l),
    isList: (l) => l.startsWith("GET ") && l.includes("list-type"),
  },
  {
    name: "azure (Azurite)",
    async start() {
      const s = await startAzurite();
      return { env: s.env, endpoint: s.env.PLUGIN_ENDPOINT, stop: s.stop };
    },
    isDataGet: (l) => l.startsWith("GET ") && !l.includes("comp="),
    isObjectMeta: (l) => /^HEAD \/[^/]+\/[^/]+\/lk\//.test(l),
    isList: (l) => l.startsWith("GET ") && l.includes("comp=list"),
  },
  {
    name: "gcs (emulator)",
    async start() {
      const s = await startGcs();
      return { env: s.env, endpoint: s.endpoint, stop: s.stop };
    },
    isDataGet: (l) => l.startsWith("GET ") && (l.includes("alt=media") || /^GET \/download\//.test(l)),
    isObjectMeta: (l) => l.startsWith("GET ") && l.includes("/o/lk%2F") && !l.includes("alt=media"),
    isList: (l) => l.startsWith("GET ") && /\/o\?/.test(l) && l.includes("prefix=lk"),
  },
];

for (const server of SERVERS) {
  Deno.test({
    name:
      `lookup: against ${server.name} a lookup sends metadata calls and a listing, and no GET of object data`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const s = await server.start();
      const dir = await Deno.makeTempDir({ prefix: "cicache-lookup-srv-" });
      const target = new URL(s.endpoint);
      const proxy = requestRecorder({ hostname: target.hostname, port: Number(target.port) });
      try {
        await writeFiles(dir, { "m1/a.txt": "a", "m2/b.txt": "b", "pk/p1/out/c": "c" });
        const env = { ...s.env, PLUGIN_CACHE_KEY: "lk", PLUGIN_MOUNT: "m1,m2,pk/*/out", HOME: dir };
        const logs: string[] = [];
        const sink = (l: string) => logs.push(l);
        assertEquals(
          await run([], { ...env, PLUGIN_REBUILD: "true" }, { cwd: dir, sink }),
          0,
          logs.join("\n"),
        );
        await Deno.remove(join(dir, "m1"), { recursive: true });

        const proxied = new URL(s.endpoint);
        proxied.port = new URL(proxy.endpoint).port;
        const viaProxy = {
          ...env,
          PLUGIN_ENDPOINT: proxied.toString().replace(/\/$/, ""),
          DRONE_OUTPUT: join(dir, "out"),
        };
        assertEquals(
          await run(["restore", "--lookup-only"], viaProxy, { cwd: dir, sink }),
          0,
          logs.join("\n"),
        );
        assertEquals(
          await Deno.readTextFile(join(dir, "out")),
          "cache_hit=true\ncache_state=complete\ncache_key_matched=lk\n",
        );
        const seen = proxy.requests.join("\n");
        assertEquals(proxy.requests.filter(server.isDataGet), [], seen);
        // One metadata call per literal mount, one listing for the glob.
        assertEquals(proxy.requests.filter(server.isObjectMeta).length, 2, seen);
        assertEquals(proxy.requests.filter(server.isList).length, 1, seen);
        assert(!await exists(join(dir, "m1")));

        // The same recorder sees the data GETs of a real restore: the checks above can fail.
        proxy.requests.length = 0;
        assertEquals(await run(["restore"], viaProxy, { cwd: dir, sink }), 0, logs.join("\n"));
        assert(proxy.requests.some(server.isDataGet), proxy.requests.join("\n"));
        assertEquals(await Deno.readTextFile(join(dir, "m1/a.txt")), "a");
      } finally {
        await proxy.close();
        await Deno.remove(dir, { recursive: true });
        await s.stop();
      }
    },
  });
}
