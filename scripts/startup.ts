/**
 * Start-up benchmark: how long a restore miss takes from process start to the
 * first request reaching the storage server, and to exit, per backend, with
 * the CPU (user + sys) the process burnt by each point.
 *
 * Each backend's real test server (scripts/servers/*) runs behind a proxy that
 * timestamps the first request of every run: the fault proxy in pass mode for
 * the HTTP backends (S3 on Swift, Azure on Azurite, GCS on the emulator, the
 * Harness test service), a plain TCP relay for sftp (sshd) that stamps the client's
 * first SSH bytes (not the TCP connect, which the sftp backend opens early: its
 * time is the extra column `tcp conn`). At that moment the
 * proxy reads the child's CPU ticks from `/proc/<pid>/stat`; `/usr/bin/time`
 * gives wall and CPU at exit. The filesystem backend has no server: only the
 * exit figures. A floor row runs an empty module under the same `deno run`.
 * Then a 1 MB round trip per backend and entry: a save of a 1 MiB
 * incompressible file under a fresh key and its restore into an empty
 * mount (rows `… 1MB save`, `… 1MB restore`: first request and exit).
 *
 * Usage: `deno run -A scripts/startup.ts [--runs N] [--bundle] [--baseline DIR] [--miss-only] [--rtt MS]
 * [backend …]` (`--rtt`: sftp only, the relay adds that round-trip time, as a distant server would)
 * (backends: filesystem s3 azure gcs sftp harness; default all). `--bundle`
 * also runs the bundles that are built: the one-file `dist/ci-cache.js` (`deno
 * task bundle`, the release's shape) and the split `dist/ci-cache/main.js`
 * (`deno task bundle:split`, whose backends stay lazy);
 * `--baseline DIR` also runs `DIR/main.ts` (another checkout, e.g. `git
 * archive main | tar -x -C DIR` plus `deno install` there). The entries run
 * interleaved, so a loaded machine slows them alike. Prints one row per
 * backend and entry: medians of N runs (default 7).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { startFaultProxy } from "./servers/faults.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const DENO = Deno.execPath();
const TICK_S = 0.01; // USER_HZ is 100 on Linux

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "7" },
    bundle: { type: "boolean", default: false },
    baseline: { type: "string" },
    "miss-only": { type: "boolean", default: false },
    rtt: { type: "string", default: "0" },
  },
  allowPositionals: true,
});
const RUNS = Number(values.runs);
const ALL = ["filesystem", "s3", "azure", "gcs", "sftp", "harness"];
const chosen = positionals.length > 0 ? positionals : ALL;

/** What one run measured (seconds). */
interface Sample {
  /** sftp only: when the TCP connection reached the relay. */
  connWall?: number;
  firstWall?: number;
  firstCpu?: number;
  exitWall: number;
  exitCpu: number;
}

/** The first request of the current run, seen by a proxy. */
let onFirst: (() => void) | undefined;
let onConnection: (() => void) | undefined;
function connection(): void {
  const f = onConnection;
  onConnection = undefined;
  f?.();
}
function firstRequest(): void {
  const f = onFirst;
  onFirst = undefined;
  f?.();
}

/** CPU seconds (user + sys) of the child process of `parent` (the `time` wrapper). */
function childCpu(parent: number): number | undefined {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(f[1]) === parent) return (Number(f[11]) + Number(f[12])) * TICK_S;
  }
  return undefined;
}

/**
 * A plain TCP relay in front of `port` that reports the first SSH bytes the client sends in each run (its
 * identification line): the SSH counterpart of an HTTP backend's first request. Not the TCP connection,
 * which ci-cache opens before its SSH client is loaded (`lib/storage/sftp/preconnect.ts`); its time is
 * reported apart. With `rttMs` the relay plays a distant server: it connects upstream one RTT after accepting
 * and holds every chunk half an RTT in each direction.
 */
function tcpRelay(port: number, rttMs = 0): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      connection();
      (async () => {
        if (rttMs > 0) await new Promise((r) => setTimeout(r, rttMs));
        const up = await Deno.connect({ hostname: "127.0.0.1", port });
        let seen = false;
        const stamp = new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            if (!seen && chunk.byteLength > 0) {
              seen = true;
              firstRequest();
            }
            controller.enqueue(chunk);
          },
        });
        await Promise.all([
          conn.readable.pipeThrough(stamp).pipeThrough(held(rttMs / 2)).pipeTo(up.writable).catch(() => {}),
          up.readable.pipeThrough(held(rttMs / 2)).pipeTo(conn.writable).catch(() => {}),
        ]);
      })().catch(() => {});
    }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

/** Passes each chunk on `ms` after it arrived, in order, without holding up the reading. */
function held(ms: number): TransformStream<Uint8Array, Uint8Array> {
  if (ms <= 0) return new TransformStream();
  let last = Promise.resolve();
  return new TransformStream({
    transform(chunk, controller) {
      const due = performance.now() + ms;
      last = last.then(() => new Promise((r) => setTimeout(r, Math.max(0, due - performance.now()))))
        .then(() => controller.enqueue(chunk));
    },
    flush: () => last,
  });
}

/**
 * One run of `deno run -A <entry> <mode>` with `env`. By default a restore
 * of a fresh key, so always a miss; `key` and `expect` for the round trip.
 */
async function once(
  entry: string[],
  env: Record<string, string>,
  cwd: string,
  mode = "restore",
  key = `startup-miss-${crypto.randomUUID()}`,
  expect: RegExp = /miss|not found|no cache|does not exist/i,
): Promise<Sample> {
  const start = performance.now();
  const child = new Deno.Command("/usr/bin/time", {
    args: ["-f", "STARTUP-TIME %e %U %S", DENO, "run", "-A", ...entry, mode],
    env: { ...env, PLUGIN_CACHE_KEY: key, PLUGIN_MOUNT: "node_modules", NO_COLOR: "1" },
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const sample: Partial<Sample> = {};
  onConnection = () => (sample.connWall = (performance.now() - start) / 1000);
  onFirst = () => {
    sample.firstWall = (performance.now() - start) / 1000;
    sample.firstCpu = childCpu(child.pid);
  };
  const out = await child.output();
  onFirst = undefined;
  onConnection = undefined;
  const exitWall = (performance.now() - start) / 1000;
  const text = new TextDecoder().decode(out.stderr);
  const m = text.match(/STARTUP-TIME ([\d.]+) ([\d.]+) ([\d.]+)/);
  if (!m) throw new Error(`no timing from /usr/bin/time:\n${text}`);
  if (!expect.test(text) || !out.success) {
    throw new Error(`the ${mode} run did not end as expected (${expect}):\n${text}`);
  }
  return { ...sample, exitWall, exitCpu: Number(m[2]) + Number(m[3]) };
}

const median = (xs: number[]) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (x: number) => Number.isNaN(x) ? "    -" : x.toFixed(3);

/** Starts the server of `backend`, behind a timing proxy; returns the CLI environment and a stop. */
async function serve(
  backend: string,
): Promise<{ env: Record<string, string>; stop: () => Promise<void> }> {
  const proxied = (url: string) => {
    const u = new URL(url);
    const proxy = startFaultProxy(Number(u.port), () => {
      firstRequest();
      return { kind: "pass" };
    });
    u.port = String(proxy.port);
    return { url: u.href.replace(/\/$/, u.pathname === "/" ? "" : "/"), proxy };
  };
  switch (backend) {
    case "filesystem": {
      const dir = await Deno.makeTempDir({ prefix: "ci-cache-startup-" });
      return {
        env: { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: dir },
        stop: () => Deno.remove(dir, { recursive: true }),
      };
    }
    case "s3": {
      const { startSwift } = await import("./servers/swift.ts");
      const swift = await startSwift();
      const { url, proxy } = proxied(swift.endpoint);
      return {
        env: { ...swift.env, PLUGIN_ENDPOINT: url.replace(/\/$/, "") },
        stop: async () => {
          await proxy.close();
          await swift.stop();
        },
      };
    }
    case "azure": {
      const { startAzurite } = await import("./servers/azurite.ts");
      const azurite = await startAzurite();
      const { url, proxy } = proxied(azurite.url);
      return {
        env: { ...azurite.env, PLUGIN_ENDPOINT: url.replace(/\/$/, "") },
        stop: async () => {
          await proxy.close();
          await azurite.stop();
        },
      };
    }
    case "gcs": {
      const { startGcs } = await import("./servers/gcs.ts");
      const gcs = await startGcs();
      const { url, proxy } = proxied(gcs.endpoint);
      return {
        env: { ...gcs.env, PLUGIN_ENDPOINT: url.replace(/\/$/, "") },
        stop: async () => {
          await proxy.close();
          await gcs.stop();
        },
      };
    }
    case "sftp": {
      const { startSshd } = await import("./servers/sshd.ts");
      const sshd = await startSshd();
      const relay = tcpRelay(sshd.port, Number(values.rtt));
      return {
        env: { ...sshd.env, SFTP_PORT: String(relay.port) },
        stop: async () => {
          relay.close();
          await sshd.stop();
        },
      };
    }
    case "harness": {
      const { startSwift } = await import("./servers/swift.ts");
      const { startHarnessService } = await import("./servers/harness.ts");
      const swift = await startSwift();
      const service = await startHarnessService({ swift, token: "test-token", accountId: "acct" });
      const { url, proxy } = proxied(service.baseUrl);
      return {
        env: {
          PLUGIN_BACKEND: "harness",
          PLUGIN_CACHE_SERVICE_BASE_URL: url.replace(/\/$/, ""),
          PLUGIN_CACHE_SERVICE_BEARER_TOKEN: "test-token",
          PLUGIN_ACCOUNT_ID: "acct",
        },
        stop: async () => {
          await proxy.close();
          await service.stop();
          await swift.stop();
        },
      };
    }
    default:
      throw new Error(`unknown backend ${backend} (one of ${ALL.join(", ")})`);
  }
}

const entries: [string, string[]][] = [["main.ts", [`${ROOT}main.ts`]]];
if (values.bundle) {
  const built = async (path: string) => await Deno.stat(`${ROOT}${path}`).then(() => true, () => false);
  if (await built("dist/ci-cache.js")) entries.push(["bundle", [`${ROOT}dist/ci-cache.js`]]);
  if (await built("dist/ci-cache/main.js")) entries.push(["bundle split", [`${ROOT}dist/ci-cache/main.js`]]);
  if (entries.length === 1) {
    throw new Error("--bundle: build one first (deno task bundle, deno task bundle:split)");
  }
}
if (values.baseline) entries.push(["baseline", [`${values.baseline.replace(/\/$/, "")}/main.ts`]]);
const cwd = await Deno.makeTempDir({ prefix: "ci-cache-startup-cwd-" });

// The floor: the same `deno run` of an empty module.
const empty = `${cwd}/empty.ts`;
await Deno.writeTextFile(empty, "");
const floor: number[][] = [[], []];
for (let i = 0; i < RUNS; i++) {
  const start = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "STARTUP-TIME %e %U %S", DENO, "run", "-A", empty],
    stderr: "piped",
  }).output();
  const m = new TextDecoder().decode(out.stderr).match(/STARTUP-TIME ([\d.]+) ([\d.]+) ([\d.]+)/)!;
  floor[0].push((performance.now() - start) / 1000);
  floor[1].push(Number(m[2]) + Number(m[3]));
}

console.log(`medians of ${RUNS} runs, seconds from spawn; CPU = user + sys of the deno process`);
console.log(
  `${"backend".padEnd(11)} ${"entry".padEnd(20)} ${"1st req".padStart(7)} ${"cpu@1st".padStart(7)} ` +
    `${"exit".padStart(7)} ${"cpu@exit".padStart(8)} ${"tcp conn".padStart(8)}`,
);
const row = (name: string, entry: string, s: Sample[]) =>
  console.log(
    `${name.padEnd(11)} ${entry.padEnd(20)} ${
      fmt(median(s.flatMap((x) => x.firstWall ?? []))).padStart(7)
    } ` +
      `${fmt(median(s.flatMap((x) => x.firstCpu ?? []))).padStart(7)} ` +
      `${fmt(median(s.map((x) => x.exitWall))).padStart(7)} ${
        fmt(median(s.map((x) => x.exitCpu))).padStart(8)
      } ${fmt(median(s.flatMap((x) => x.connWall ?? []))).padStart(8)}`,
  );
row("(floor)", "empty", floor[0].map((w, i) => ({ exitWall: w, exitCpu: floor[1][i] })));

try {
  for (const backend of chosen) {
    const server = await serve(backend);
    try {
      for (const [, entry] of entries) await once(entry, server.env, cwd); // warm the module caches
      const samples: Sample[][] = entries.map(() => []);
      for (let i = 0; i < RUNS; i++) {
        for (const [e, [, entry]] of entries.entries()) samples[e].push(await once(entry, server.env, cwd));
      }
      for (const [e, [name]] of entries.entries()) row(backend, name, samples[e]);
      // A 1 MB round trip: save a 1 MiB incompressible file under a fresh key, restore it into an empty mount.
      if (values["miss-only"]) continue;
      const trips: { save: Sample[]; restore: Sample[] }[] = entries.map(() => ({ save: [], restore: [] }));
      for (let i = 0; i < RUNS; i++) {
        for (const [e, [, entry]] of entries.entries()) {
          const key = `startup-trip-${crypto.randomUUID()}`;
          await Deno.mkdir(`${cwd}/node_modules`, { recursive: true });
          await Deno.writeFile(`${cwd}/node_modules/blob.bin`, crypto.getRandomValues(new Uint8Array(65536)));
          const mib = await Deno.open(`${cwd}/node_modules/blob.bin`, { write: true, append: true });
          for (let k = 1; k < 16; k++) await mib.write(crypto.getRandomValues(new Uint8Array(65536)));
          mib.close();
          trips[e].save.push(await once(entry, server.env, cwd, "save", key, /save done/));
          await Deno.remove(`${cwd}/node_modules`, { recursive: true });
          trips[e].restore.push(await once(entry, server.env, cwd, "restore", key, /restore done/));
          if ((await Deno.stat(`${cwd}/node_modules/blob.bin`)).size !== 1024 * 1024) {
            throw new Error(`${backend}: the 1 MB restore wrote the wrong size`);
          }
          await Deno.remove(`${cwd}/node_modules`, { recursive: true });
        }
      }
      for (const [e, [name]] of entries.entries()) {
        for (const op of ["save", "restore"] as const) row(`${backend}`, `${name} 1MB ${op}`, trips[e][op]);
      }
    } finally {
      await server.stop();
    }
  }
} finally {
  await Deno.remove(cwd, { recursive: true });
}
