/**
 * `deno task bench`: measures save and restore through ci-cache next to the
 * shell pipeline a user would write instead, in the same run, and prints the
 * ratio (DESIGN §9).
 *
 * The tree is seeded and realistic: ≈20k small text-like files of 1–20 KB in
 * nested package directories, a few 50 MB files (one random, two
 * compressible), and symlinks; ≈370 MB. It is built once under `.bench/` and
 * reused. Backends: filesystem always; Azure (Azurite), S3 (Swift), GCS
 * (emulator) and SFTP (OpenSSH sshd) when their server scripts can start
 * here. On SFTP the reference transfer is OpenSSH's own `ssh … 'cat > file'`
 * (and `ssh … cat`) on the same server, not rclone. Harness runs the test
 * cache service in front of Swift (multipart on; no rclone reference, the
 * archive-only ratio applies); `harness-1g` saves and restores one 1 GiB
 * random file (tar) through it: its peak RSS shows the save's memory stays
 * bounded whatever the size.
 *
 * Two references per row, measured in the same run (ratios, never absolute
 * times, are what this noisy machine can compare):
 * - **rclone**: `tar -cf - | zstd -T0 -3 | rclone rcat` and `rclone cat |
 *   zstd -dc | tar -x`, rclone (Debian's, `scripts/install/rclone.sh`) being
 *   the independent, tuned transfer client, with the same part size and
 *   parallelism (16 MiB × 4) on the same server (`scripts/bench_rclone.ts`);
 *   on the filesystem backend the archive goes straight into the volume.
 * - **archive only**: the same shell archive step with the transfer done by
 *   ci-cache's own backend code, so it isolates the archive work.
 * Plus a client-cost column, CPU seconds (user + sys) per GB of tree, and
 * small-cache rows: a restore miss and a 1 MB save and restore. On object
 * stores two more columns: `xCPU/GB`, the CPU per GB moved of ci-cache's
 * transfer alone (`bench_transfer.ts put|get` of the archive file, minus
 * the same helper's start-up and one `stat`: the client cost compared
 * between backends in docs/azure.md), and `srv%`, the test server's CPU
 * (its processes, read from /proc) during our run and during rclone's, in
 * % of one core: where it nears 100 % for a single-threaded emulator, the
 * server, not the client, sets the row's speed.
 *
 * Environment: `BENCH_SCALE` (default 1) scales the tree; `BENCH_SHAPE`
 * (`realistic`, default, or `many-small`: 100k files of ≈60 bytes, 20 per
 * directory, the shape of node_modules); `BENCH_BACKENDS` (comma list,
 * default all) and `BENCH_FORMATS` (default `tar,zstd`) select;
 * `BENCH_EXISTING=0` leaves out the restore-existing rows;
 * `BENCH_REPEAT` (default 3) runs each measurement that often, alternating
 * ours and the references, and reports the median wall time. `BENCH_GLOB=0`
 * leaves out the glob-expansion rows (scripts/bench_glob.ts). `BENCH_JSON=<file>`
 * also writes the rows with the run's conditions (commit, load average
 * sampled every 5 s); `scripts/bench_report.ts` renders them as the
 * Markdown tables of README.md, docs/performance.md and docs/azure.md.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { rcloneInstalled, type RcloneRemote, rcloneRemote } from "./bench_rclone.ts";
import { benchGlob } from "./bench_glob.ts";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const BENCH = join(ROOT, ".bench");
const SCALE = Number(Deno.env.get("BENCH_SCALE") ?? "1");
const FORMATS = (Deno.env.get("BENCH_FORMATS") ?? "tar,zstd").split(",");
const BACKENDS = (Deno.env.get("BENCH_BACKENDS") ?? "filesystem,azure,s3,gcs,sftp,harness,harness-1g").split(
  ",",
);
const REPEAT = Math.max(1, Number(Deno.env.get("BENCH_REPEAT") ?? "3"));
const SHAPE = Deno.env.get("BENCH_SHAPE") ?? "realistic";
/** `BENCH_EXISTING=0` leaves out the restore-over-an-existing-mount rows (the slowest on a loaded disk). */
const EXISTING = Deno.env.get("BENCH_EXISTING") !== "0";
if (SHAPE !== "realistic" && SHAPE !== "many-small") throw new Error(`BENCH_SHAPE: realistic or many-small`);

/** xorshift32: deterministic bytes and choices. */
class Rng {
  #x: number;
  constructor(seed: number) {
    this.#x = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x >>> 0;
    return this.#x;
  }
  int(lo: number, hi: number): number {
    return lo + (this.next() % (hi - lo + 1));
  }
}

const WORDS = (
  "const let var function return import export default from async await class extends new this if else for " +
  "while switch case break continue try catch finally throw typeof instanceof module require exports prototype " +
  "value key index length push map filter reduce options config callback promise resolve reject error data " +
  "buffer stream chunk encoding utf8 path join dirname resolve process env node_modules package version"
).split(" ");

function textBytes(rng: Rng, size: number): Uint8Array {
  const parts: string[] = [];
  let n = 0;
  while (n < size) {
    const w = WORDS[rng.next() % WORDS.length];
    const sep = rng.next() % 9 === 0 ? ";\n" : rng.next() % 5 === 0 ? "(" : " ";
    parts.push(w, sep);
    n += w.length + sep.length;
  }
  return new TextEncoder().encode(parts.join("")).subarray(0, size);
}

function randomBytes(rng: Rng, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const view = new Uint32Array(out.buffer, 0, size >>> 2);
  for (let i = 0; i < view.length; i++) view[i] = rng.next();
  return out;
}

interface Tree {
  path: string;
  files: number;
  bytes: number;
  /** Files compared byte for byte after every restore (relative to `path`). */
  probes?: string[];
}

/** The tree for `shape`, built once under `.bench/` and reused. */
async function buildTree(shape: string, scale: number): Promise<Tree> {
  const name = shape === "realistic" ? `tree-s${scale}` : `tree-${shape}-s${scale}`;
  const path = join(BENCH, name, "cache");
  const marker = join(BENCH, name, "manifest.json");
  try {
    return JSON.parse(await Deno.readTextFile(marker));
  } catch { /* build it */ }
  console.error(`building the benchmark tree (${shape}, scale ${scale}) under ${path} …`);
  await Deno.remove(join(BENCH, name), { recursive: true }).catch(() => {});
  const tree = shape === "many-small"
    ? await buildManySmall(path, scale)
    : shape === "tiny"
    ? await buildTiny(path)
    : shape === "big"
    ? await buildBig(path)
    : await buildRealistic(path, scale);
  await Deno.writeTextFile(marker, JSON.stringify(tree));
  return tree;
}

/** 100k × scale files of 40–80 bytes, 20 per directory, in nested package directories. */
async function buildManySmall(path: string, scale: number): Promise<Tree> {
  const rng = new Rng(7);
  const total = Math.round(100_000 * scale);
  let bytes = 0;
  for (let f = 0; f < total; f++) {
    const dir = join(path, "node_modules", `pkg-${Math.floor(f / 200)}`, `d-${Math.floor(f / 20) % 10}`);
    if (f % 20 === 0) await Deno.mkdir(dir, { recursive: true });
    const size = rng.int(40, 80);
    await Deno.writeFile(join(dir, `f-${f % 20}.js`), textBytes(rng, size));
    bytes += size;
  }
  return { path, files: total, bytes, probes: [join("node_modules", "pkg-0", "d-0", "f-0.js")] };
}

/** About 1 MB: ten 100 KB files (the small-cache rows). */
async function buildTiny(path: string): Promise<Tree> {
  const rng = new Rng(3);
  await Deno.mkdir(join(path, "lib"), { recursive: true });
  for (let f = 0; f < 10; f++) await Deno.writeFile(join(path, "lib", `f-${f}.js`), textBytes(rng, 100_000));
  return { path, files: 10, bytes: 1_000_000, probes: [join("lib", "f-0.js")] };
}

/** One 1 GiB random file and a small probe file (the harness-1g rows). */
async function buildBig(path: string): Promise<Tree> {
  const rng = new Rng(7);
  await Deno.mkdir(join(path, "node_modules", "pkg-0"), { recursive: true });
  await Deno.mkdir(join(path, "blobs"), { recursive: true });
  const probe = textBytes(rng, 4096);
  await Deno.writeFile(join(path, "node_modules", "pkg-0", "file-0.js"), probe);
  const file = await Deno.open(join(path, "blobs", "blob-0.bin"), {
    write: true,
    create: true,
    truncate: true,
  });
  const size = 1024 * 1024 * 1024;
  for (let done = 0; done < size; done += 16 * 1024 * 1024) {
    await file.write(randomBytes(rng, 16 * 1024 * 1024));
  }
  file.close();
  return {
    path,
    files: 2,
    bytes: size + probe.length,
    probes: [join("node_modules", "pkg-0", "file-0.js"), join("blobs", "blob-0.bin")],
  };
}

async function buildRealistic(path: string, scale: number): Promise<Tree> {
  const SCALE = scale;
  const rng = new Rng(42);
  let files = 0;
  let bytes = 0;
  const smallFiles = Math.round(20_000 * SCALE);
  const packages = Math.max(1, Math.round(smallFiles / 100));
  for (let p = 0; p < packages; p++) {
    const pkg = join(path, "node_modules", `pkg-${p}`);
    const dirs = [pkg, join(pkg, "lib"), join(pkg, "lib", "internal"), join(pkg, "dist", "esm")];
    for (const d of dirs) await Deno.mkdir(d, { recursive: true });
    for (let f = 0; f < 100 && files < smallFiles; f++) {
      const size = rng.int(1024, 20 * 1024);
      await Deno.writeFile(join(dirs[f % dirs.length], `file-${f}.js`), textBytes(rng, size));
      files++;
      bytes += size;
    }
    if (p % 5 === 0) {
      await Deno.mkdir(join(path, "node_modules", ".bin"), { recursive: true });
      await Deno.symlink(`../pkg-${p}/lib/file-1.js`, join(path, "node_modules", ".bin", `tool-${p}`));
    }
  }
  const big = Math.max(1, Math.round(3 * SCALE));
  await Deno.mkdir(join(path, "blobs"), { recursive: true });
  for (let b = 0; b < big; b++) {
    const size = Math.round(50 * 1024 * 1024 * Math.min(1, SCALE * 3));
    const data = b === 0 ? randomBytes(rng, size) : textBytes(rng, size);
    await Deno.writeFile(join(path, "blobs", `blob-${b}.bin`), data);
    files++;
    bytes += size;
  }
  return {
    path,
    files,
    bytes,
    probes: [join("node_modules", "pkg-0", "file-0.js"), join("blobs", "blob-0.bin")],
  };
}

interface Measure {
  seconds: number;
  /** User + system CPU seconds. */
  cpu?: number;
  rssMb?: number;
  /** CPU seconds the test server's processes burnt during the step (see {@link ServerCpu}). */
  serverCpu?: number;
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const CLK_TCK = 100;

/** `[pid, ppid, utime + stime ticks]` of every process, from /proc (empty where there is no /proc). */
function processes(): [number, number, number][] {
  const out: [number, number, number][] = [];
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        out.push([Number(e.name), Number(f[1]), Number(f[11]) + Number(f[12])]);
      } catch { /* gone */ }
    }
  } catch { /* no /proc */ }
  return out;
}

/**
 * The CPU time of a test server: the processes that descend from the bench
 * right after the server started (before any measured command runs), so a
 * row can show whether the server, not the client, set its speed (Azurite
 * receives uploads in one Node thread).
 */
class ServerCpu {
  readonly pids: Set<number>;
  constructor() {
    const children = new Map<number, number[]>();
    for (const [pid, ppid] of processes()) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
    this.pids = new Set();
    const walk = (pid: number) => {
      for (const c of children.get(pid) ?? []) {
        this.pids.add(c);
        walk(c);
      }
    };
    walk(Deno.pid);
  }
  /** CPU seconds used so far by the server's processes. */
  seconds(): number {
    let ticks = 0;
    for (const pid of this.pids) {
      try {
        const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        ticks += Number(f[11]) + Number(f[12]);
      } catch { /* exited */ }
    }
    return ticks / CLK_TCK;
  }
}

const hasTime = await Deno.stat("/usr/bin/time").then(() => true, () => false);

/**
 * Runs a command under /usr/bin/time, returning wall seconds, CPU and peak
 * RSS (of the command and its children), plus the server's CPU meanwhile.
 * Every timed step starts with nothing left to write back (`sync`, untimed):
 * the write-back of the previous step's files (a restore of 100,000 files
 * takes tens of seconds here) would otherwise slow whichever step comes
 * next, ours or the reference's.
 */
async function measure(
  cmd: string[],
  env: Record<string, string>,
  cwd: string,
  server?: ServerCpu,
): Promise<Measure> {
  await syncDisks();
  const statsFile = await Deno.makeTempFile();
  const serverBefore = server?.seconds();
  const argv = hasTime ? ["/usr/bin/time", "-o", statsFile, "-f", "%U %S %M", ...cmd] : cmd;
  const started = performance.now();
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: { ...Deno.env.toObject(), ...env },
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - started) / 1000;
  const serverCpu = server && serverBefore !== undefined ? server.seconds() - serverBefore : undefined;
  if (!out.success) {
    throw new Error(`${cmd.join(" ")} failed:\n${new TextDecoder().decode(out.stderr).slice(-3000)}`);
  }
  let rssMb: number | undefined;
  let cpu: number | undefined;
  if (hasTime) {
    const [user, sys, rssKb] = (await Deno.readTextFile(statsFile)).trim().split(/\s+/).slice(-3);
    cpu = Number(user) + Number(sys);
    rssMb = Number(rssKb) / 1024;
  }
  await Deno.remove(statsFile);
  return { seconds, cpu, rssMb, serverCpu };
}

/**
 * Reads the tree once (untimed) so the save that follows finds it in the page cache, as the references
 * that run after it do: this machine's kernel reclaims cache pages it has not touched for a few minutes
 * (DAMON), so otherwise the first save of a large tree alone pays for reading it from disk (packing the
 * ×4 tree alone took 27.8 s of wall time for 8.8 s of CPU).
 */
async function warmTree(parent: string): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: ["-c", "tar -cf - cache | cat > /dev/null"],
    cwd: parent,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`warming the tree failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Writes back every dirty page (`sync`); a no-op where there is no `sync` command. */
async function syncDisks(): Promise<void> {
  await new Deno.Command("sync").output().catch(() => {});
}

/**
 * Flushes dirty pages and waits (at most `maxSeconds`) until the disks have written nothing for 3 seconds
 * in a row. Deleting a large tree (an earlier run's restores, 100k+ files) keeps the disk writing for tens
 * of seconds after `rm` returns, and file creation meanwhile costs several times its system time: on this
 * VM `tar -x` of the bench tree took 5.4–5.9 s during such writeback against 2.2 s on a quiet disk. Rows
 * that start in that state measure the previous step. Reads `/proc/diskstats` (Linux); elsewhere it only
 * syncs.
 */
async function settleDisk(maxSeconds = 120): Promise<void> {
  await syncDisks();
  const disk = (name = "") => /^([sv]|xv|h)d[a-z]+$/.test(name) || /^(nvme\d+n\d+|mmcblk\d+)$/.test(name);
  const written = async () => {
    const text = await Deno.readTextFile("/proc/diskstats").catch(() => "");
    // Sectors written (the 10th field) of whole disks, not their partitions.
    const rows = text.split("\n").map((l) => l.trim().split(/\s+/));
    return rows.filter((f) => disk(f[2])).reduce((n, f) => n + Number(f[9]), 0);
  };
  const started = performance.now();
  let last = await written();
  let quiet = 0;
  while (quiet < 3 && performance.now() - started < maxSeconds * 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await written();
    quiet = now - last < 2048 ? quiet + 1 : 0; // under 1 MiB a second
    last = now;
  }
  const waited = (performance.now() - started) / 1000;
  if (waited > 5) console.error(`waited ${waited.toFixed(0)} s for the disk to settle (earlier deletions)`);
}

/** Two steps run one after the other, as one measure (peak RSS: the larger). */
function both(a: Measure, b: Measure): Measure {
  const add = (x?: number, y?: number) => (x === undefined || y === undefined ? undefined : x + y);
  return {
    seconds: a.seconds + b.seconds,
    cpu: add(a.cpu, b.cpu),
    rssMb: Math.max(a.rssMb ?? 0, b.rssMb ?? 0) || undefined,
    serverCpu: add(a.serverCpu, b.serverCpu),
  };
}

/** The run with the median wall time (peak RSS: the largest seen). */
function median(runs: readonly Measure[]): Measure {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  const mid = sorted[Math.floor(sorted.length / 2)];
  return { ...mid, rssMb: Math.max(...runs.map((r) => r.rssMb ?? 0)) || undefined };
}

interface Server {
  env: Record<string, string>;
  stop: () => Promise<void>;
  /** sftp: `ssh …` for the reference, and the cache root on the server. */
  sshCommand?: string;
  cacheRoot?: string;
}

async function startBackend(name: string, cacheRoot: string): Promise<Server | undefined> {
  if (name === "filesystem") {
    await Deno.mkdir(cacheRoot, { recursive: true });
    return {
      env: { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cacheRoot },
      stop: () => Promise.resolve(),
    };
  }
  if (name.startsWith("harness")) {
    try {
      const { startSwift } = await import(join(ROOT, "scripts", "servers", "swift.ts"));
      const { startHarnessService } = await import(join(ROOT, "scripts", "servers", "harness.ts"));
      const swift = await startSwift();
      const service = await startHarnessService({ swift, token: "bench-token", accountId: "bench" });
      return {
        env: {
          PLUGIN_BACKEND: "harness",
          PLUGIN_CACHE_SERVICE_BASE_URL: service.baseUrl,
          PLUGIN_CACHE_SERVICE_BEARER_TOKEN: "bench-token",
          PLUGIN_ACCOUNT_ID: "bench",
          PLUGIN_ENABLE_MULTIPART: "true",
        },
        stop: async () => {
          await service.stop();
          await swift.stop();
        },
      };
    } catch (err) {
      console.error(
        `skipping ${name}: its test servers did not start (${err instanceof Error ? err.message : err})`,
      );
      return undefined;
    }
  }
  const scripts: Record<string, [string, string]> = {
    azure: ["azurite.ts", "startAzurite"],
    s3: ["swift.ts", "startSwift"],
    gcs: ["gcs.ts", "startGcs"],
    sftp: ["sshd.ts", "startSshd"],
  };
  const [file, fn] = scripts[name] ?? [];
  if (!file) return undefined;
  try {
    const mod = await import(join(ROOT, "scripts", "servers", file));
    // Azurite keeps blobs in memory unless told otherwise; the bench data belongs on disk.
    return await mod[fn](name === "azure" ? { onDisk: true } : undefined);
  } catch (err) {
    console.error(
      `skipping ${name}: its test server did not start (${err instanceof Error ? err.message : err})`,
    );
    return undefined;
  }
}

const MAIN = join(ROOT, "main.ts");
const DENO = Deno.execPath();

/** Run directories, removed at the very end. */
const leftovers: string[] = [];

interface Row {
  backend: string;
  format: string;
  op: string;
  tree: Tree;
  ours: Measure;
  /** `tar | zstd | rclone rcat` and the reverse; undefined where rclone cannot reach the server. */
  rclone?: Measure;
  /** The shell archive step with ci-cache's own transfer code. */
  archiveOnly?: Measure;
  /** ci-cache's transfer alone (`bench_transfer.ts put|get` of the archive file): its client cost. */
  transfer?: Measure;
  /** Bytes of that archive file. */
  transferBytes?: number;
  /** The same helper doing one `stat` (start-up, settings, backend, one request): subtracted per GB. */
  transferBase?: Measure;
}

/** Shell commands of the two references for one format. */
function shellSteps(format: string): { compress: string; decompress: string } {
  return {
    compress: format === "zstd" ? " | zstd -T0 -3 -q" : format === "gzip" ? " | gzip" : "",
    decompress: format === "zstd" ? "zstd -dc -q" : format === "gzip" ? "gzip -dc" : "cat",
  };
}

/** The reference's save and restore commands (bash) for one object. */
interface ReferenceSteps {
  /** Stores the output of the shell command `archive` (`tar -cf - cache | zstd …`) as the object. */
  save: (archive: string) => string;
  /** Extracts the object into the working directory, decompressed by the shell command `decompress`. */
  restore: (decompress: string) => string;
  env: Record<string, string>;
}

/** The reference's save and restore for one object, or undefined without rclone. */
function rcloneSteps(
  name: string,
  server: Server,
  rclone: RcloneRemote | undefined,
  cacheRoot: string,
  object: string,
): ReferenceSteps | undefined {
  const pipe = (source: string, decompress: string) =>
    `${source}${decompress === "cat" ? "" : ` | ${decompress}`} | tar -xf -`;
  if (name === "filesystem") {
    // The user's pipeline reads and writes the archive file in the cache volume itself, no `cat` between.
    const file = join(cacheRoot, object);
    return {
      save: (archive) => `mkdir -p '${join(file, "..")}' && ${archive} > '${file}'`,
      restore: (decompress) =>
        decompress === "cat" ? `tar -xf '${file}'` : `${decompress} < '${file}' | tar -xf -`,
      env: {},
    };
  }
  if (server.sshCommand) {
    // sftp: OpenSSH's own client streams the archive into the same server.
    const remote = `${server.cacheRoot}/${object}`;
    return {
      save: (archive) =>
        `${archive} | ${server.sshCommand} "mkdir -p '${resolve(remote, "..")}' && cat > '${remote}'"`,
      restore: (decompress) => pipe(`${server.sshCommand} "cat '${remote}'"`, decompress),
      env: {},
    };
  }
  if (!rclone) return undefined;
  return {
    save: (archive) => `${archive} | rclone rcat '${rclone.path(object)}'`,
    restore: (decompress) => pipe(`rclone cat '${rclone.path(object)}'`, decompress),
    env: rclone.env,
  };
}

async function benchBackend(name: string, trees: Tree[], rows: Row[]): Promise<void> {
  await settleDisk();
  const work = await Deno.makeTempDir({ dir: BENCH, prefix: `run-${name}-` });
  const cacheRoot = join(work, "cache-root");
  const server = await startBackend(name, cacheRoot);
  if (!server) return;
  // sshd forks a process per connection, after this snapshot: its CPU is not sampled.
  const cpu = name === "filesystem" || name === "sftp" ? undefined : new ServerCpu();
  const rclone = name === "filesystem" || name === "sftp" || !(await rcloneInstalled())
    ? undefined
    : rcloneRemote(name, server.env);
  if (name !== "filesystem" && name !== "sftp" && !rclone) {
    console.error(`${name}: no rclone reference (see scripts/bench_rclone.ts)`);
  }
  const helper = join(ROOT, "scripts", "bench_transfer.ts");
  const [tree, tiny] = trees;
  try {
    for (const format of name.endsWith("-1g") ? ["tar"] : FORMATS) {
      for (const t of [tree, tiny]) {
        const srcParent = resolve(t.path, "..");
        const { compress, decompress } = shellSteps(format);
        const runs = {
          save: [] as Measure[],
          restore: [] as Measure[],
          existing: [] as Measure[],
          rSave: [] as Measure[],
          rRestore: [] as Measure[],
          rExisting: [] as Measure[],
          aSave: [] as Measure[],
          aRestore: [] as Measure[],
          tSave: [] as Measure[],
          tRestore: [] as Measure[],
          tBase: [] as Measure[],
        };
        let transferBytes: number | undefined;
        const repeat = t === tiny ? Math.max(REPEAT, 5) : REPEAT;
        // Alternate ours and the references; restores go into fresh directories (re-rooted for ours), so
        // nothing is deleted right before a timed step.
        for (let i = 0; i < repeat; i++) {
          const key = `bench-${format}-${t.files}-${i}-${Date.now()}`;
          const env = {
            ...server.env,
            PLUGIN_CACHE_KEY: key,
            PLUGIN_ARCHIVE_FORMAT: format,
            PLUGIN_LOG_LEVEL: "warn",
          };
          await warmTree(srcParent);
          runs.save.push(await measure([DENO, "run", "-A", MAIN, "save", "cache"], env, srcParent, cpu));
          const restoreDir = await freshDir(work, `restore-ours-${format}-${t.files}-${i}`);
          runs.restore.push(
            await measure([DENO, "run", "-A", MAIN, "restore", "cache"], env, restoreDir, cpu),
          );
          await verifyRestored(t, join(restoreDir, "cache"));
          // Over the existing mount (a reused workspace): staged, verified, then moved in entry by entry.
          if (EXISTING) {
            runs.existing.push(
              await measure([DENO, "run", "-A", MAIN, "restore", "cache"], env, restoreDir, cpu),
            );
            await verifyRestored(t, join(restoreDir, "cache"));
          }

          const steps = rcloneSteps(name, server, rclone, cacheRoot, `${key}-rclone/cache`);
          if (steps) {
            runs.rSave.push(
              await measure(
                ["bash", "-c", steps.save(`tar -cf - cache${compress}`)],
                steps.env,
                srcParent,
                cpu,
              ),
            );
            const rDir = await freshDir(work, `restore-rclone-${format}-${t.files}-${i}`);
            runs.rRestore.push(
              await measure(
                ["bash", "-c", steps.restore(decompress)],
                steps.env,
                rDir,
                cpu,
              ),
            );
            await verifyRestored(t, join(rDir, "cache"));
            if (EXISTING) {
              runs.rExisting.push(
                await measure(
                  ["bash", "-c", steps.restore(decompress)],
                  steps.env,
                  rDir,
                  cpu,
                ),
              );
            }
          }

          if (name !== "filesystem") {
            // Archive only: the same shell archive step, the transfer through ci-cache's backend code, measured
            // apart too: the transfer's own CPU is the client cost compared between backends (docs/azure.md).
            const archive = join(work, `archive-${i}.${format}`);
            const objectName = `${key}-archive/cache`;
            const transfer = (op: string) => [DENO, "run", "-A", helper, op, objectName, archive];
            const pack = await measure(
              ["bash", "-c", `tar -cf - cache${compress} > '${archive}'`],
              {},
              srcParent,
              cpu,
            );
            transferBytes = (await Deno.stat(archive)).size;
            const put = await measure(transfer("put"), server.env, srcParent, cpu);
            runs.aSave.push(both(pack, put));
            runs.tSave.push(put);
            await Deno.remove(archive).catch(() => {});
            const aDir = await freshDir(work, `restore-archive-${format}-${t.files}-${i}`);
            const get = await measure(transfer("get"), server.env, aDir, cpu);
            const unpack = await measure(
              ["bash", "-c", `${decompress} < '${archive}' | tar -xf -`],
              {},
              aDir,
              cpu,
            );
            runs.aRestore.push(both(get, unpack));
            runs.tRestore.push(get);
            runs.tBase.push(await measure(transfer("stat"), server.env, aDir, cpu));
            await Deno.remove(archive).catch(() => {});
            await verifyRestored(t, join(aDir, "cache"));
          }
        }
        const label = t === tiny ? "-1MB" : "";
        const none = [] as Measure[];
        const ops = [
          ["save", runs.save, runs.rSave, runs.aSave, runs.tSave],
          ["restore", runs.restore, runs.rRestore, runs.aRestore, runs.tRestore],
          ["restore-existing", runs.existing, runs.rExisting, none, none],
        ] as const;
        for (const [op, ours, r, a, x] of ops) {
          if (ours.length === 0) continue;
          const row: Row = {
            backend: name,
            format,
            op: op + label,
            tree: t,
            ours: median(ours),
            rclone: r.length ? median(r) : undefined,
            archiveOnly: a.length ? median(a) : undefined,
            transfer: x.length ? median(x) : undefined,
            transferBytes: x.length ? transferBytes : undefined,
            transferBase: x.length ? median(runs.tBase) : undefined,
          };
          rows.push(row);
          printRow(row);
        }
      }
    }
    // A restore miss: start-up, settings, one lookup, exit.
    const misses: Measure[] = [];
    for (let i = 0; i < Math.max(REPEAT, 5); i++) {
      const env = {
        ...server.env,
        PLUGIN_CACHE_KEY: `bench-miss-${i}-${Date.now()}`,
        PLUGIN_LOG_LEVEL: "error",
      };
      misses.push(
        await measure(
          [DENO, "run", "-A", MAIN, "restore", "cache"],
          env,
          await freshDir(work, `miss-${i}`),
          cpu,
        ),
      );
    }
    const miss: Row = {
      backend: name,
      format: "-",
      op: "miss",
      tree: { ...tiny, files: 0, bytes: 0 },
      ours: median(misses),
    };
    rows.push(miss);
    printRow(miss);
  } finally {
    await server.stop();
    // The restored trees are removed only after every backend ran: ext4 makes file creation right after a big
    // delete several times slower, which would skew the next backend's restores.
    leftovers.push(work);
  }
}

async function freshDir(parent: string, name: string): Promise<string> {
  const dir = join(parent, name);
  await Deno.mkdir(dir);
  return dir;
}

async function verifyRestored(tree: Tree, dir: string): Promise<void> {
  for (const probe of tree.probes ?? []) {
    const [a, b] = await Promise.all([
      Deno.readFile(join(tree.path, probe)),
      Deno.readFile(join(dir, probe)),
    ]);
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) throw new Error(`restore differs at ${probe}`);
  }
}

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined ? "n/a" : n.toFixed(digits);
}

/** Transfer CPU seconds per GB moved, net of the helper's fixed cost (start-up, one request). */
export function transferCpuPerGb(r: JsonRow): number | undefined {
  const { transfer, transferBase, transferBytes } = r;
  if (transfer?.cpu === undefined || transferBase?.cpu === undefined || !transferBytes) return undefined;
  return Math.max(0, transfer.cpu - transferBase.cpu) / (transferBytes / 1e9);
}

/** Server CPU during a step, in % of one core. */
export function serverPercent(m: Measure | undefined): number | undefined {
  return m?.serverCpu === undefined ? undefined : (100 * m.serverCpu) / m.seconds;
}

function printRow(r: Row): void {
  const j = jsonRow(r);
  const mb = r.tree.bytes / 1e6;
  const perGb = r.ours.cpu !== undefined && r.tree.bytes > 0 ? r.ours.cpu / (r.tree.bytes / 1e9) : undefined;
  const xfer = transferCpuPerGb(j);
  const srv = serverPercent(r.ours);
  const refSrv = serverPercent(r.rclone);
  console.log(
    [
      r.backend.padEnd(10),
      r.format.padEnd(5),
      r.op.padEnd(20),
      `${fmt(r.ours.seconds, 2)}s`.padStart(7),
      (mb ? `${fmt(mb / r.ours.seconds)} MB/s` : "").padStart(12),
      (r.tree.files ? `${fmt(r.tree.files / r.ours.seconds, 0)} f/s` : "").padStart(11),
      `${fmt(r.ours.cpu, 2)}s`.padStart(7),
      (perGb !== undefined ? `${fmt(perGb, 1)}` : "").padStart(6),
      `${fmt(r.ours.rssMb, 0)} MB`.padStart(7),
      (r.rclone ? `${fmt(r.rclone.seconds, 2)}s` : "-").padStart(7),
      (r.rclone ? `${fmt(r.rclone.cpu, 2)}s` : "-").padStart(7),
      (r.rclone ? `${fmt(r.rclone.rssMb, 0)} MB` : "-").padStart(7),
      (r.rclone ? fmt(r.ours.seconds / r.rclone.seconds, 2) : "-").padStart(6),
      (r.archiveOnly ? fmt(r.ours.seconds / r.archiveOnly.seconds, 2) : "-").padStart(7),
      (xfer !== undefined ? fmt(xfer, 2) : "-").padStart(7),
      (srv !== undefined ? `${fmt(srv, 0)}%` : "-").padStart(6),
      (refSrv !== undefined ? `${fmt(refSrv, 0)}%` : "-").padStart(7),
    ].join(" "),
  );
}

/** One row as written to `BENCH_JSON` (read by scripts/bench_report.ts). */
export interface JsonRow {
  backend: string;
  format: string;
  op: string;
  files: number;
  bytes: number;
  ours: Measure;
  rclone?: Measure;
  archiveOnly?: Measure;
  transfer?: Measure;
  transferBytes?: number;
  transferBase?: Measure;
}

/** What `BENCH_JSON` holds: the run's conditions and its rows. */
export interface BenchJson {
  started: string;
  finished?: string;
  shape: string;
  scale: number;
  repeat: number;
  cores: number;
  commit: string;
  deno: string;
  /** The 1-minute load average, sampled every 5 s during the run. */
  load: { min: number; mean: number; max: number; samples: number };
  tree: { files: number; bytes: number };
  rows: JsonRow[];
}

function jsonRow(r: Row): JsonRow {
  const { tree, ...rest } = r;
  return { ...rest, files: tree.files, bytes: tree.bytes };
}

/** The 1-minute load average, or NaN without /proc. */
function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

async function gitCommit(): Promise<string> {
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      cwd: ROOT,
      stdout: "piped",
    })
      .output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "unknown";
  }
}

if (import.meta.main) {
  await Deno.mkdir(BENCH, { recursive: true });
  const tree = await buildTree(SHAPE, SCALE);
  const tiny = await buildTree("tiny", 1);
  console.log(
    `tree: ${SHAPE}, ${tree.files} files, ${(tree.bytes / 1e6).toFixed(0)} MB (scale ${SCALE}); median of ` +
      `${REPEAT} (5 for the 1 MB and miss rows); CPU = user+sys; CPU/GB = ours per GB of tree; ` +
      `ref = tar | zstd -T0 -3 | rclone rcat (filesystem: into the volume) and the reverse; ` +
      `ratio = ours / ref wall time (below 1: ci-cache is faster); arch = ours / (shell archive + ci-cache transfer)`,
  );
  console.log(
    "backend    fmt   op                      ours        speed        rate     CPU CPU/GB     RSS     ref ref CPU ref RSS  ratio    arch xCPU/GB  srv%  ref srv%",
  );
  const rows: Row[] = [];
  const loads = [loadAverage()];
  const sampler = setInterval(() => loads.push(loadAverage()), 5000);
  const jsonFile = Deno.env.get("BENCH_JSON");
  const report: BenchJson = {
    started: new Date().toISOString(),
    shape: SHAPE,
    scale: SCALE,
    repeat: REPEAT,
    cores: navigator.hardwareConcurrency,
    commit: await gitCommit(),
    deno: Deno.version.deno,
    load: { min: 0, mean: 0, max: 0, samples: 0 },
    tree: { files: tree.files, bytes: tree.bytes },
    rows: [],
  };
  /** Rewritten after every backend, so a run cut short keeps what it measured. */
  const writeJson = async (finished?: string) => {
    if (!jsonFile) return;
    const seen = loads.filter((l) => !Number.isNaN(l));
    report.load = {
      min: Math.min(...seen),
      mean: seen.reduce((a, b) => a + b, 0) / seen.length,
      max: Math.max(...seen),
      samples: seen.length,
    };
    report.rows = rows.map(jsonRow);
    report.finished = finished;
    await Deno.writeTextFile(jsonFile, JSON.stringify(report, null, 1));
  };
  try {
    for (const name of BACKENDS) {
      const main = name.endsWith("-1g") ? await buildTree("big", 1) : tree;
      await benchBackend(name, [main, tiny], rows);
      await writeJson();
    }
    clearInterval(sampler);
    await writeJson(new Date().toISOString());
    if (jsonFile) console.log(`rows written to ${jsonFile} (render: deno run -A scripts/bench_report.ts)`);
    if (Deno.env.get("BENCH_GLOB") !== "0") {
      const globDir = await Deno.makeTempDir({ dir: BENCH, prefix: "glob-" });
      leftovers.push(globDir);
      benchGlob(globDir);
    }
  } finally {
    clearInterval(sampler);
    for (const dir of leftovers) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
