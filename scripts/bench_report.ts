/**
 * Renders `deno task bench` results (the JSON `BENCH_JSON=<file>` writes) as
 * the Markdown tables of README.md, docs/performance.md and docs/azure.md,
 * so those tables are regenerated from bench output, never typed in.
 *
 * Usage:
 * - `deno run -A scripts/bench_report.ts full <run.json> …`: every row (docs/performance.md); several
 *   runs (say backends run apart) are merged into one table.
 * - `deno run -A scripts/bench_report.ts readme <run.json>`: one line per backend (README).
 * - `deno run -A scripts/bench_report.ts scale <small.json> <large.json>`: time and RSS against tree size.
 * - `deno run -A scripts/bench_report.ts azure <run.json>`: Azure against S3, client CPU per GB (docs/azure.md).
 *
 * @module
 */
import { type BenchJson, type JsonRow, serverPercent, transferCpuPerGb } from "./bench.ts";

/** Peak RSS every bench row must stay below (issue 15, DESIGN §9). */
export const RSS_LIMIT_MB = 256;
/** Server CPU (% of one core) from which a row is called server-bound. */
export const SERVER_BOUND = 85;

function f(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits);
}

const BACKEND_NAMES: Record<string, string> = {
  filesystem: "filesystem",
  s3: "S3 (Swift)",
  azure: "Azure (Azurite)",
  gcs: "GCS (emulator)",
  sftp: "SFTP (OpenSSH)",
  harness: "Harness (→ Swift)",
  "harness-1g": "Harness, 1 GiB file",
};

/** One line on the run's conditions, for the text above a table. */
export function conditions(run: BenchJson): string {
  const mb = (run.tree.bytes / 1e6).toFixed(0);
  return `${run.started.slice(0, 16).replace("T", " ")} UTC, commit ${run.commit}, Deno ${run.deno}, ` +
    `${run.cores} cores; tree ${run.shape} ×${run.scale}: ${
      run.tree.files.toLocaleString("en")
    } files, ${mb} MB; ` +
    `median of ${run.repeat}; load average during the run ${f(run.load.min, 1)}–${f(run.load.max, 1)} ` +
    `(mean ${f(run.load.mean, 1)})`;
}

/** Evidence written beside a row: memory over the limit, a server at its CPU limit. */
export function notes(r: JsonRow): string {
  const out: string[] = [];
  if ((r.ours.rssMb ?? 0) >= RSS_LIMIT_MB) out.push(`**RSS ≥ ${RSS_LIMIT_MB} MB**`);
  const ours = serverPercent(r.ours);
  const ref = serverPercent(r.rclone);
  if ((ours ?? 0) >= SERVER_BOUND) {
    out.push(
      `server-bound: server ${f(ours, 0)} % of a core` +
        (ref !== undefined ? `, ${f(ref, 0)} % under rclone` : ""),
    );
  }
  return out.join("; ");
}

function ratio(a: { seconds: number } | undefined, b: { seconds: number } | undefined): number | undefined {
  return a && b ? a.seconds / b.seconds : undefined;
}

function cpuPerGb(r: JsonRow): number | undefined {
  return r.ours.cpu !== undefined && r.bytes > 0 ? r.ours.cpu / (r.bytes / 1e9) : undefined;
}

function table(head: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Every row of a run. */
export function fullTable(run: BenchJson): string {
  return table(
    [
      "backend",
      "fmt",
      "op",
      "ours s",
      "MB/s",
      "CPU s/GB",
      "CPU µs/file",
      "RSS MB",
      "ref s",
      "÷ ref",
      "÷ archive-only",
      "transfer CPU s/GB",
      "server CPU % (ours / ref)",
      "note",
    ],
    run.rows.map((r) => [
      r.backend,
      r.format,
      r.op,
      f(r.ours.seconds),
      r.bytes ? f(r.bytes / 1e6 / r.ours.seconds, 0) : "",
      f(cpuPerGb(r), 1),
      r.files && r.ours.cpu !== undefined ? f((r.ours.cpu / r.files) * 1e6, 0) : "–",
      f(r.ours.rssMb, 0),
      f(r.rclone?.seconds),
      f(ratio(r.ours, r.rclone)),
      f(ratio(r.ours, r.archiveOnly)),
      f(transferCpuPerGb(r), 1),
      r.ours.serverCpu === undefined
        ? "–"
        : `${f(serverPercent(r.ours), 0)} / ${f(serverPercent(r.rclone), 0)}`,
      notes(r),
    ]),
  );
}

/** One line per backend: save and restore time (÷ the rclone reference) per format, the largest RSS. */
export function readmeTable(run: BenchJson): string {
  const formats = [...new Set(run.rows.map((r) => r.format))].filter((x) => x !== "-");
  const backends = [...new Set(run.rows.map((r) => r.backend))];
  const of = (b: string, format: string, op: string) =>
    run.rows.find((r) => r.backend === b && r.format === format && r.op === op);
  const cell = (r?: JsonRow) => r ? `${f(r.ours.seconds)} s (${f(ratio(r.ours, r.rclone))})` : "–";
  return table(
    ["backend", ...formats.flatMap((x) => [`${x} save`, `${x} restore`]), "peak RSS"],
    backends.map((b) => [
      BACKEND_NAMES[b] ?? b,
      ...formats.flatMap((x) => [cell(of(b, x, "save")), cell(of(b, x, "restore"))]),
      `${f(Math.max(...run.rows.filter((r) => r.backend === b).map((r) => r.ours.rssMb ?? 0)), 0)} MB`,
    ]),
  );
}

/**
 * Time, CPU and RSS of the same rows at two tree sizes. CPU (user + sys)
 * shows linearity even where other jobs on the machine stretch wall times.
 */
export function scaleTable(small: BenchJson, large: BenchJson): string {
  const size = large.tree.bytes / small.tree.bytes;
  const rows = small.rows.filter((r) => r.bytes === small.tree.bytes);
  const [a, b] = [`×${small.scale}`, `×${large.scale}`];
  return table(
    [
      "backend",
      "fmt",
      "op",
      `${a} s`,
      `${b} s`,
      "time ratio",
      `${a} CPU s`,
      `${b} CPU s`,
      "CPU ratio",
      `RSS ${a}`,
      `RSS ${b}`,
    ],
    rows.flatMap((r) => {
      const big = large.rows.find((l) => l.backend === r.backend && l.format === r.format && l.op === r.op);
      if (!big) return [];
      return [[
        r.backend,
        r.format,
        r.op,
        f(r.ours.seconds, 1),
        f(big.ours.seconds, 1),
        f(big.ours.seconds / r.ours.seconds),
        f(r.ours.cpu, 1),
        f(big.ours.cpu, 1),
        f(big.ours.cpu! / r.ours.cpu!),
        `${f(r.ours.rssMb, 0)} MB`,
        `${f(big.ours.rssMb, 0)} MB`,
      ]];
    }),
  ) +
    `\n\nSize ratio ${f(size)} (${(small.tree.bytes / 1e6).toFixed(0)} → ${
      (large.tree.bytes / 1e6).toFixed(0)
    } MB).`;
}

/** Azure against S3 on the same data: client CPU per GB (whole run and transfer alone), and ratios to rclone. */
export function azureTable(run: BenchJson): string {
  const out: string[][] = [];
  for (const format of [...new Set(run.rows.map((r) => r.format))].filter((x) => x !== "-")) {
    for (const op of ["save", "restore"]) {
      const of = (b: string) => run.rows.find((r) => r.backend === b && r.format === format && r.op === op);
      const az = of("azure");
      const s3 = of("s3");
      if (!az || !s3) continue;
      const [a1, s1] = [cpuPerGb(az), cpuPerGb(s3)];
      const [a2, s2] = [transferCpuPerGb(az), transferCpuPerGb(s3)];
      out.push([
        format,
        op,
        `${f(a1, 1)} / ${f(s1, 1)} = ${f(a1! / s1!)}`,
        `${f(a2, 1)} / ${f(s2, 1)} = ${f(a2! / s2!)}`,
        `${f(ratio(az.ours, az.rclone))} / ${f(ratio(s3.ours, s3.rclone))}`,
        `${f(serverPercent(az.ours), 0)} % (rclone ${f(serverPercent(az.rclone), 0)} %)`,
        `${f(serverPercent(s3.ours), 0)} % (rclone ${f(serverPercent(s3.rclone), 0)} %)`,
      ]);
    }
  }
  return table(
    [
      "fmt",
      "op",
      "CPU s/GB of tree, Azure / S3",
      "transfer CPU s/GB, Azure / S3",
      "wall ÷ rclone, Azure / S3",
      "Azurite CPU",
      "Swift CPU",
    ],
    out,
  );
}

if (import.meta.main) {
  const [mode, ...files] = Deno.args;
  const runs: BenchJson[] = await Promise.all(files.map(async (p) => JSON.parse(await Deno.readTextFile(p))));
  if (runs.length === 0) throw new Error("usage: bench_report.ts full|readme|scale|azure <run.json> …");
  // full, readme, azure: the rows of several runs (e.g. backends run apart) in one table.
  const merged = { ...runs[0], rows: runs.flatMap((r) => r.rows) };
  const render: Record<string, () => string> = {
    full: () => fullTable(merged),
    readme: () => readmeTable(merged),
    scale: () => scaleTable(runs[0], runs[1]),
    azure: () => azureTable(merged),
  };
  if (!render[mode]) throw new Error(`unknown mode ${mode}: full, readme, scale or azure`);
  console.log(`<!-- ${mode}: ${runs.map(conditions).join(" | ")} -->`);
  console.log(render[mode]());
}
