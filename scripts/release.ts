/**
 * Builds the release assets locally, as the release workflow does on a tag
 * (`deno task release`; `.github/workflows/release.yml` runs it with
 * `--strict`):
 *
 * - `ci-cache.js`: the bundle, one file (`deno run -A ci-cache.js …` runs it).
 *   One file cannot keep the backends lazy: the bundler hoists the `node:*`
 *   imports of every backend's SDK to its top, so each run loads Deno's Node
 *   layer for all of them (≈0.23 s CPU to the first request, against
 *   0.08–0.16 s from source). `deno task bundle:split` builds the lazy shape, a
 *   folder of chunks (`dist/ci-cache/main.js` + chunks, run the same way), which
 *   is not a release asset;
 * - `plugin-<os>-<arch>.zst` for linux amd64/arm64, darwin amd64/arm64 and
 *   windows amd64: the `deno compile`d binary (an `.exe` for Windows),
 *   zstd-compressed, the layout Harness' binary plugin runner downloads
 *   (`plugin.yml`);
 * - `SHA256SUMS` over all of them (`sha256sum -c SHA256SUMS` checks).
 *
 * The uncompressed binaries go to `<out>/../bin/ci-cache-<os>-<arch>[.exe]`
 * for the Docker images (`docker/`); they are not release assets.
 *
 * The source is staged into a temp dir first and the commit written into its
 * `lib/version.ts` (`BUILD_COMMIT`), so `--version` of every asset names the
 * commit it was built from. `deno compile` downloads Deno's runtime for each
 * target; where that download is impossible (as on an offline build
 * machine) the target is reported as skipped with the reason and the rest
 * goes on, unless `--strict` is given (then it fails).
 *
 * Usage: `deno run -A scripts/release.ts [--out dist/release] [--strict]
 * [--targets linux-amd64,darwin-arm64]`.
 *
 * @module
 */
import { compressStream } from "../lib/archive/compression.ts";
import { commit, VERSION } from "../lib/version.ts";

/** A compile target: Deno's target triple and the asset's os/arch names (Harness' `{{ os }}-{{ arch }}`). */
export interface Target {
  os: "linux" | "darwin" | "windows";
  arch: "amd64" | "arm64";
  triple: string;
}

/** Every target a release builds. */
export const TARGETS: readonly Target[] = [
  { os: "linux", arch: "amd64", triple: "x86_64-unknown-linux-gnu" },
  { os: "linux", arch: "arm64", triple: "aarch64-unknown-linux-gnu" },
  { os: "darwin", arch: "amd64", triple: "x86_64-apple-darwin" },
  { os: "darwin", arch: "arm64", triple: "aarch64-apple-darwin" },
  { os: "windows", arch: "amd64", triple: "x86_64-pc-windows-msvc" },
];

/** What one run built: asset names, skipped targets with their reason. */
export interface ReleaseResult {
  out: string;
  commit: string;
  assets: string[];
  skipped: { target: string; reason: string }[];
}

/** Options of {@link release}. */
export interface ReleaseOptions {
  /** Output directory for the assets (emptied first). */
  out: string;
  /** Fail when a target cannot be compiled (the release workflow sets it). */
  strict?: boolean;
  /** `os-arch` names to build (default: all of {@link TARGETS}). */
  targets?: string[];
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

const root = new URL("../", import.meta.url).pathname;

/** Name of a target's release asset. */
export function assetName(t: Pick<Target, "os" | "arch">): string {
  return `plugin-${t.os}-${t.arch}.zst`;
}

async function exec(args: string[], cwd: string): Promise<{ ok: boolean; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { ok: out.success, output: (dec.decode(out.stdout) + dec.decode(out.stderr)).trim() };
}

/** Copies what the program is made of (main.ts, lib/, deno.json, deno.lock) and embeds the commit. */
async function stage(sha: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ci-cache-release-" });
  const copy = async (rel: string) => {
    const info = await Deno.stat(`${root}${rel}`);
    if (info.isDirectory) {
      await Deno.mkdir(`${dir}/${rel}`, { recursive: true });
      for await (const e of Deno.readDir(`${root}${rel}`)) await copy(`${rel}/${e.name}`);
    } else {
      await Deno.copyFile(`${root}${rel}`, `${dir}/${rel}`);
    }
  };
  for (const rel of ["main.ts", "deno.json", "deno.lock", "lib"]) await copy(rel);
  const versionFile = `${dir}/lib/version.ts`;
  const source = await Deno.readTextFile(versionFile);
  const line = /^export const BUILD_COMMIT: string = "";$/m;
  if (!line.test(source)) {
    throw new Error(`release: ${versionFile} has no empty BUILD_COMMIT line to fill in`);
  }
  await Deno.writeTextFile(
    versionFile,
    source.replace(line, `export const BUILD_COMMIT: string = "${sha}";`),
  );
  return dir;
}

/** One line out of `deno compile`'s error: the runtime it tried to download and the deepest cause. */
function compileFailure(output: string): string {
  const lines = output.split("Stack backtrace")[0].split("\n").map((l) => l.trim()).filter(Boolean);
  const download = lines.find((l) => l.startsWith("Download "))?.slice("Download ".length);
  const cause = (lines.at(-1) ?? "deno compile failed").replace(/^\d+: /, "");
  return download ? `downloading ${download}: ${cause}` : cause;
}

/** zstd-compresses a file (level 19, with frame checksums) with ci-cache's own compressor. */
async function zstdFile(from: string, to: string): Promise<void> {
  const src = await Deno.open(from);
  const dst = await Deno.open(to, { write: true, create: true, truncate: true });
  await src.readable.pipeThrough(compressStream("zstd", 19)).pipeTo(dst.writable);
}

/** SHA-256 of a file, hex (streamed through `sha256sum`-equivalent Web Crypto on the whole file). */
async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Builds the release assets into `options.out` and writes `SHA256SUMS`.
 *
 * @example
 * ```ts
 * const r = await release({ out: "dist/release" });
 * console.log(r.assets, r.skipped);
 * ```
 */
export async function release(options: ReleaseOptions): Promise<ReleaseResult> {
  const log = options.log ?? ((l: string) => console.error(l));
  const out = options.out.replace(/\/+$/, "");
  const bin = `${out}/../bin`;
  const sha = Deno.env.get("GITHUB_SHA") || await commit(new URL("../lib/version.ts", import.meta.url).href);
  const wanted = options.targets ?? TARGETS.map((t) => `${t.os}-${t.arch}`);
  const targets = TARGETS.filter((t) => wanted.includes(`${t.os}-${t.arch}`));
  const unknown = wanted.filter((w) => !TARGETS.some((t) => `${t.os}-${t.arch}` === w));
  if (unknown.length) throw new Error(`release: unknown target ${unknown.join(", ")}`);

  await Deno.remove(out, { recursive: true }).catch(() => {});
  await Deno.mkdir(out, { recursive: true });
  await Deno.mkdir(bin, { recursive: true });
  const staged = await stage(sha);
  const result: ReleaseResult = { out, commit: sha, assets: [], skipped: [] };
  try {
    log(`release: ci-cache ${VERSION}, commit ${sha}`);
    // deno.json loads dynamic imports lazily, so the bundler's own graph misses the npm packages only they
    // reach: install every package the program can load first.
    const installed = await exec(["install", "--quiet", "--entrypoint", "main.ts"], staged);
    if (!installed.ok) throw new Error(`release: deno install failed:\n${installed.output}`);
    const bundled = await exec([
      "bundle",
      "--quiet",
      "--platform=deno",
      // ssh2's optional native add-ons (not built here) are loaded in try/catch: keep them out of the bundle.
      "--external",
      "*.node",
      "-o",
      `${out}/ci-cache.js`,
      "main.ts",
    ], staged);
    if (!bundled.ok) throw new Error(`release: deno bundle failed:\n${bundled.output}`);
    result.assets.push("ci-cache.js");
    log("release: ci-cache.js bundled");

    for (const t of targets) {
      const exe = `${bin}/ci-cache-${t.os}-${t.arch}${t.os === "windows" ? ".exe" : ""}`;
      const compiled = await exec(
        ["compile", "--quiet", "-A", "--target", t.triple, "-o", exe, "main.ts"],
        staged,
      );
      if (!compiled.ok) {
        const reason = compileFailure(compiled.output);
        if (options.strict) {
          throw new Error(`release: deno compile for ${t.triple} failed:\n${compiled.output}`);
        }
        result.skipped.push({ target: `${t.os}-${t.arch}`, reason });
        log(`release: skipped ${assetName(t)}: deno compile --target ${t.triple} failed: ${reason}`);
        continue;
      }
      await zstdFile(exe, `${out}/${assetName(t)}`);
      result.assets.push(assetName(t));
      log(`release: ${assetName(t)} written`);
    }

    const sums = [];
    for (const name of [...result.assets].sort()) sums.push(`${await sha256(`${out}/${name}`)}  ${name}`);
    await Deno.writeTextFile(`${out}/SHA256SUMS`, sums.join("\n") + "\n");
    log(`release: SHA256SUMS over ${sums.length} assets in ${out}`);
    return result;
  } finally {
    await Deno.remove(staged, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const args = [...Deno.args];
  const take = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i < 0 ? undefined : args.splice(i, 2)[1];
  };
  const out = take("--out") ?? `${root}dist/release`;
  const targets = take("--targets")?.split(",").map((s) => s.trim()).filter(Boolean);
  const strict = args.includes("--strict");
  try {
    const r = await release({ out, strict, targets });
    if (r.skipped.length) {
      console.error(
        `release: ${r.skipped.length} target(s) not compiled (deno compile needs to download Deno's runtime ` +
          `for each target); the other assets are complete`,
      );
    }
  } catch (err) {
    console.error((err as Error).message);
    Deno.exit(1);
  }
}
