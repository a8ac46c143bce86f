/**
 * `deno run -A --no-config <url>/main.ts` works for every backend: the
 * checkout is served over HTTP from 127.0.0.1 (as from a raw Git URL), so
 * no `deno.json` and no local file is read, and a save + restore runs from
 * that URL against real Azurite and Swift (and the filesystem backend).
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";
import { startSwift } from "../scripts/servers/swift.ts";

const root = new URL("../", import.meta.url).pathname;

/** Serves main.ts and lib/ of the checkout (TypeScript media type), nothing else; records what was asked. */
function serveCheckout(): { url: string; requested: string[]; close: () => Promise<void> } {
  const requested: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requested.push(path);
    if (path.includes("..") || !(path === "/main.ts" || path.startsWith("/lib/"))) {
      return new Response("not found", { status: 404 });
    }
    try {
      const body = await Deno.readFile(`${root}${path.slice(1)}`);
      return new Response(body, { headers: { "content-type": "application/typescript; charset=utf-8" } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requested,
    close: () => server.shutdown(),
  };
}

/** Runs `deno run -A --no-config <url>/main.ts args` in `cwd` with `env`, from a directory without deno.json. */
async function runFromUrl(url: string, args: string[], env: Record<string, string>, cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-config",
      "--unstable-lazy-dynamic-imports",
      "--quiet",
      // Deno caches remote modules by URL: a port an earlier run used would be served from that cache (stale
      // code, and no request reaches this server). Reload what comes from this server, nothing else.
      `--reload=${url}`,
      `${url}/main.ts`,
      ...args,
    ],
    cwd,
    env: { ...env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** save, delete, restore of a small tree through the URL; checks the bytes came back. */
async function roundTrip(url: string, env: Record<string, string>): Promise<void> {
  const ws = await Deno.makeTempDir({ prefix: "ci-cache-url-" });
  try {
    await Deno.mkdir(`${ws}/data/sub`, { recursive: true });
    await Deno.writeTextFile(`${ws}/data/a.txt`, "from a url");
    const bin = new Uint8Array(300_000).map((_, i) => (i * 31) % 251);
    await Deno.writeFile(`${ws}/data/sub/b.bin`, bin);
    const saved = await runFromUrl(
      url,
      ["save", "--cache-key", "url-run", "--archive-format", "zstd", "data"],
      env,
      ws,
    );
    assertEquals(saved.code, 0, saved.stderr);
    await Deno.remove(`${ws}/data`, { recursive: true });
    const restored = await runFromUrl(
      url,
      ["restore", "--cache-key", "url-run", "--exit-code", "data"],
      env,
      ws,
    );
    assertEquals(restored.code, 0, restored.stderr);
    assertEquals(await Deno.readTextFile(`${ws}/data/a.txt`), "from a url");
    assertEquals(await Deno.readFile(`${ws}/data/sub/b.bin`), bin);
  } finally {
    await Deno.remove(ws, { recursive: true });
  }
}

const slow = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "url run: --version and a filesystem save + restore from the served checkout, no deno.json read",
  ...slow,
  async fn() {
    const served = serveCheckout();
    const cacheRoot = await Deno.makeTempDir();
    try {
      const cwd = await Deno.makeTempDir();
      const v = await runFromUrl(served.url, ["--version"], {}, cwd);
      await Deno.remove(cwd);
      assertEquals(v.code, 0, v.stderr);
      assertMatch(v.stdout.trim(), /^ci-cache \d+\.\d+\.\d+ \(deno \S+, commit unknown\)$/);
      await roundTrip(served.url, { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cacheRoot });
      assert(!served.requested.some((p) => p.endsWith("deno.json")), "deno.json was requested");
      assert(served.requested.includes("/lib/cli.ts"), "modules came from the server");
    } finally {
      await served.close();
      await Deno.remove(cacheRoot, { recursive: true });
    }
  },
});

Deno.test({
  name: "url run: save + restore from the URL against Azurite (azure backend)",
  ...slow,
  async fn() {
    const azurite = await startAzurite();
    const served = serveCheckout();
    try {
      await roundTrip(served.url, azurite.env);
      // A shared key takes the SDK-free path: a small cache loads neither the SDK backend nor the SDK.
      assert(
        served.requested.includes("/lib/storage/azure/fetch_backend.ts"),
        "the azure backend came from the URL",
      );
      assert(
        !served.requested.includes("/lib/deps/azure_storage_blob.ts"),
        "a small cache loaded the Azure SDK",
      );
    } finally {
      await served.close();
      await azurite.stop();
    }
  },
});

Deno.test({
  name: "url run: save + restore from the URL against Swift (s3 backend)",
  ...slow,
  async fn() {
    const swift = await startSwift();
    const served = serveCheckout();
    try {
      // With the README's --unstable-lazy-dynamic-imports modules are fetched when used: static keys and a
      // cache of one part take the fetch backend, and the SDK (for longer saves) is never fetched.
      await roundTrip(served.url, swift.env);
      assert(
        served.requested.includes("/lib/storage/s3/fetch_backend.ts"),
        "the s3 backend came from the URL",
      );
      assert(!served.requested.includes("/lib/deps/aws_client_s3.ts"), "a small cache loaded the AWS SDK");
    } finally {
      await served.close();
      await swift.stop();
    }
  },
});
