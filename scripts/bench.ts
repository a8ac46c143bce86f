/**
 * `deno task bench`: measures save and restore through ci-cache next to the
 * shell pipeline a user would write instead, in the same run, and prints the
 * ratio (DESIGN §9).
 *
 * The tree is seeded and realistic: ≈20k small text-like files of 1–20 KB in
 * nested package directories, a few 50 MB files (one random, two
 * compressible), and symlinks; ≈370 MB. It is built once under `.bench/` and
 * reused. Backends: filesystem always; Azure (Azurite), S3 (Swift) and GCS
 * (emulator) when their server scripts can start here.
 *
 * Environment: `BENCH_SCALE` (default 1) scales the tree; `BENCH_BACKENDS`
 * (comma list, default all) and `BENCH_FORMATS` (default `tar,zstd`) select;
 * `BENCH_REPEAT` (default 3) runs each measurement that often, alternating
 * ours and the pipeline, and reports the median wall time.
 *
 * @module
 */
import { join, resolve } from "node:path";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const BENCH = join(ROOT, ".bench");
const SCALE = Number(Deno.env.get("BENCH_SCALE") ?? "1");
const FORMATS = (Deno.env.get("BENCH_FORMATS") ?? "tar,zstd").split(",");
const BACKENDS = (Deno.env.get("BENCH_BACKENDS") ?? "filesystem,azure,s3,gcs").split(",");
const REPEAT = Math.max(1, Number(Deno.env.get("BENCH_REPEAT") ?? "3"));

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
}

async function buildTree(): Promise<Tree> {
  const path = join(BENCH, `tree-s${SCALE}`, "cache");
  const marker = join(BENCH, `tree-s${SCALE}`, "manifest.json");
  try {
    return JSON.parse(await Deno.readTextFile(marker));
  } catch { /* build it */ }
  console.error(`building the benchmark tree (scale ${SCALE}) under ${path} …`);
  await Deno.remove(join(BENCH, `tree-s${SCALE}`), { recursive: true }).catch(() => {});
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
  const tree = { path, files, bytes };
  await Deno.writeTextFile(marker, JSON.stringify(tree));
  return tree;
}

interface Measure {
  seconds: number;
  /** User + system CPU seconds. */
  cpu?: number;
  rssMb?: number;
}

const hasTime = await Deno.stat("/usr/bin/time").then(() => true, () => false);

/** Runs a command under /usr/bin/time, returning wall seconds and peak RSS. */
async function measure(cmd: string[], env: Record<string, string>, cwd: string): Promise<Measure> {
  const statsFile = await Deno.makeTempFile();
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
  return { seconds, cpu, rssMb };
}

/** The run with the median wall time (peak RSS: the largest seen). */
function median(runs: Measure[]): Measure {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  const mid = sorted[Math.floor(sorted.length / 2)];
  return { ...mid, rssMb: Math.max(...runs.map((r) => r.rssMb ?? 0)) || undefined };
}

interface Server {
  env: Record<string, string>;
  stop: () => Promise<void>;
}

async function startBackend(name: string, cacheRoot: string): Promise<Server | undefined> {
  if (name === "filesystem") {
    await Deno.mkdir(cacheRoot, { recursive: true });
    return {
      env: { PLUGIN_BACKEND: "filesystem", PLUGIN_FILESYSTEM_CACHE_ROOT: cacheRoot },
      stop: () => Promise.resolve(),
    };
  }
  const scripts: Record<string, [string, string]> = {
    azure: ["azurite.ts", "startAzurite"],
    s3: ["swift.ts", "startSwift"],
    gcs: ["gcs.ts", "startGcs"],
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
  ours: Measure;
  pipeline: Measure;
}

async function benchBackend(name: string, tree: Tree, rows: Row[]): Promise<void> {
  const work = await Deno.makeTempDir({ dir: BENCH, prefix: `run-${name}-` });
  const server = await startBackend(name, join(work, "cache-root"));
  if (!server) return;
  try {
    for (const format of FORMATS) {
      const srcParent = resolve(tree.path, "..");
      const compress = format === "zstd" ? " | zstd -T0 -3 -q" : format === "gzip" ? " | gzip" : "";
      const decompress = format === "zstd" ? "zstd -dc -q" : format === "gzip" ? "gzip -dc" : "cat";
      const helper = join(ROOT, "scripts", "bench_transfer.ts");
      const runs = {
        save: [] as Measure[],
        restore: [] as Measure[],
        existing: [] as Measure[],
        pSave: [] as Measure[],
        pRestore: [] as Measure[],
        pExisting: [] as Measure[],
      };
      // Alternate ours and the pipeline, REPEAT times each; restores go into fresh directories (re-rooted for
      // ours), so nothing is deleted right before a timed step.
      for (let i = 0; i < REPEAT; i++) {
        const key = `bench-${format}-${i}-${Date.now()}`;
        const env = {
          ...server.env,
          PLUGIN_CACHE_KEY: key,
          PLUGIN_ARCHIVE_FORMAT: format,
          PLUGIN_LOG_LEVEL: "warn",
        };
        runs.save.push(await measure([DENO, "run", "-A", MAIN, "save", "cache"], env, srcParent));
        const restoreDir = join(work, `restore-ours-${format}-${i}`);
        await Deno.mkdir(restoreDir);
        runs.restore.push(await measure([DENO, "run", "-A", MAIN, "restore", "cache"], env, restoreDir));
        await verifyRestored(tree, join(restoreDir, "cache"));
        // Restore over the existing mount (the usual CI case on a reused workspace): staged, verified, moved in.
        runs.existing.push(await measure([DENO, "run", "-A", MAIN, "restore", "cache"], env, restoreDir));
        await verifyRestored(tree, join(restoreDir, "cache"));

        // The shell pipeline a user would write instead, with the same upload/download through the backend.
        const archive = join(work, `pipeline-${i}.${format}`);
        const objectName = `${key}-pipeline/cache`;
        const put = `'${DENO}' run -A '${helper}' put '${objectName}' '${archive}'`;
        runs.pSave.push(
          await measure(
            ["bash", "-c", `tar -cf - cache${compress} > '${archive}' && ${put}`],
            server.env,
            srcParent,
          ),
        );
        await Deno.remove(archive).catch(() => {}); // moved into the volume on the filesystem backend
        const pDir = join(work, `restore-pipeline-${format}-${i}`);
        await Deno.mkdir(pDir);
        const get = `'${DENO}' run -A '${helper}' get '${objectName}' '${archive}'`;
        runs.pRestore.push(
          await measure(
            ["bash", "-c", `${get} && ${decompress} < '${archive}' | tar -xf -`],
            server.env,
            pDir,
          ),
        );
        await verifyRestored(tree, join(pDir, "cache"));
        await Deno.remove(archive).catch(() => {}); // the link `get` made on the filesystem backend
        runs.pExisting.push(
          await measure(
            ["bash", "-c", `${get} && ${decompress} < '${archive}' | tar -xf -`],
            server.env,
            pDir,
          ),
        );
      }
      rows.push({ backend: name, format, op: "save", ours: median(runs.save), pipeline: median(runs.pSave) });
      rows.push({
        backend: name,
        format,
        op: "restore",
        ours: median(runs.restore),
        pipeline: median(runs.pRestore),
      });
      rows.push({
        backend: name,
        format,
        op: "restore-existing",
        ours: median(runs.existing),
        pipeline: median(runs.pExisting),
      });
      for (const row of rows.slice(-3)) printRow(tree, row);
    }
  } finally {
    await server.stop();
    // The restored trees are removed only after every backend ran: ext4 makes file creation right after a big
    // delete several times slower, which would skew the next backend's restores.
    leftovers.push(work);
  }
}

async function verifyRestored(tree: Tree, dir: string): Promise<void> {
  const probe = join("node_modules", "pkg-0", "file-0.js");
  const [a, b] = await Promise.all([Deno.readFile(join(tree.path, probe)), Deno.readFile(join(dir, probe))]);
  if (a.length !== b.length || a.some((v, i) => v !== b[i])) throw new Error(`restore differs at ${probe}`);
  const blob = join("blobs", "blob-0.bin");
  const [sa, sb] = await Promise.all([Deno.stat(join(tree.path, blob)), Deno.stat(join(dir, blob))]);
  if (sa.size !== sb.size) throw new Error(`restore differs at ${blob}`);
}

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined ? "n/a" : n.toFixed(digits);
}

function printRow(tree: Tree, r: Row): void {
  const mb = tree.bytes / 1e6;
  console.log(
    [
      r.backend.padEnd(10),
      r.format.padEnd(5),
      r.op.padEnd(16),
      `${fmt(r.ours.seconds, 2)}s`.padStart(8),
      `${fmt(mb / r.ours.seconds)} MB/s`.padStart(12),
      `${fmt(tree.files / r.ours.seconds, 0)} files/s`.padStart(15),
      `${fmt(r.ours.cpu, 2)}s`.padStart(8),
      `${fmt(r.ours.rssMb, 0)} MB`.padStart(8),
      `${fmt(r.pipeline.seconds, 2)}s`.padStart(9),
      `${fmt(r.pipeline.cpu, 2)}s`.padStart(8),
      `${fmt(r.pipeline.rssMb, 0)} MB`.padStart(8),
      `${fmt(r.ours.seconds / r.pipeline.seconds, 2)}`.padStart(7),
    ].join(" "),
  );
}

if (import.meta.main) {
  await Deno.mkdir(BENCH, { recursive: true });
  const tree = await buildTree();
  console.log(
    `tree: ${tree.files} files, ${(tree.bytes / 1e6).toFixed(0)} MB (scale ${SCALE}); ` +
      `median of ${REPEAT}; CPU = user+sys; ratio = ours / pipeline wall time (below 1: ci-cache is faster)`,
  );
  console.log(
    "backend    fmt   op                 ours        speed            rate  ours CPU ours RSS  pipeline pipe CPU pipe RSS  ratio",
  );
  const rows: Row[] = [];
  try {
    for (const name of BACKENDS) await benchBackend(name, tree, rows);
  } finally {
    for (const dir of leftovers) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
