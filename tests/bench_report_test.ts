/**
 * scripts/bench_report.ts renders bench JSON as the documentation's tables:
 * the figures come from the rows given (never typed in), and the evidence a
 * row needs is written beside it. Fixture rows only: timings are never
 * measured here.
 */
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { azureTable, fullTable, notes, readmeTable, scaleTable } from "../scripts/bench_report.ts";
import type { BenchJson, JsonRow } from "../scripts/bench.ts";

function row(backend: string, format: string, op: string, o: Partial<JsonRow> = {}): JsonRow {
  return { backend, format, op, files: 10, bytes: 1e9, ours: { seconds: 2, cpu: 4, rssMb: 100 }, ...o };
}

function run(rows: JsonRow[], scale = 1): BenchJson {
  return {
    started: "2026-11-29T02:00:00.000Z",
    shape: "realistic",
    scale,
    repeat: 3,
    cores: 2,
    commit: "abc1234",
    deno: "2.9.6",
    load: { min: 1, mean: 2, max: 3, samples: 10 },
    tree: { files: 10, bytes: 1e9 * scale },
    rows,
  };
}

Deno.test("bench_report: a row over the RSS limit and a server at its CPU limit get a note", () => {
  assertEquals(notes(row("filesystem", "tar", "save")), "");
  assertStringIncludes(
    notes(row("s3", "zstd", "save", { ours: { seconds: 1, rssMb: 300 } })),
    "RSS ≥ 256 MB",
  );
  const bound = row("azure", "tar", "save", {
    ours: { seconds: 10, cpu: 3, rssMb: 100, serverCpu: 9.5 },
    rclone: { seconds: 10, serverCpu: 9.8 },
  });
  assertStringIncludes(notes(bound), "server 95 % of a core, 98 % under rclone");
  assertStringIncludes(fullTable(run([bound])), "| azure | tar | save | 10.00 | 100 | 3.0 | 300000 | 100 |");
});

Deno.test("bench_report: README line per backend with ratios to the reference; scale and Azure tables", () => {
  const s3 = row("s3", "zstd", "save", {
    ours: { seconds: 3, cpu: 6, rssMb: 200 },
    rclone: { seconds: 4 },
    transfer: { seconds: 1, cpu: 1.5 },
    transferBase: { seconds: 0.3, cpu: 0.5 },
    transferBytes: 5e8,
  });
  const az = row("azure", "zstd", "save", {
    ours: { seconds: 6, cpu: 6.6, rssMb: 210 },
    rclone: { seconds: 5 },
    transfer: { seconds: 2, cpu: 1.7 },
    transferBase: { seconds: 0.3, cpu: 0.5 },
    transferBytes: 5e8,
  });
  const small = run([s3, az]);
  const readme = readmeTable(small);
  assertStringIncludes(readme, "| S3 (Swift) | 3.00 s (0.75) | – | 200 MB |");
  assertStringIncludes(readme, "| Azure (Azurite) | 6.00 s (1.20) | – | 210 MB |");
  // CPU per GB of tree 6.6 / 6.0; transfer net of start-up (1.7 − 0.5) / (1.5 − 0.5) per 0.5 GB.
  assertStringIncludes(
    azureTable(small),
    "| zstd | save | 6.6 / 6.0 = 1.10 | 2.4 / 2.0 = 1.20 | 1.20 / 0.75 |",
  );
  const large = run([{ ...s3, bytes: 4e9, ours: { seconds: 12.6, cpu: 25.2, rssMb: 205 } }], 4);
  const scale = scaleTable(run([{ ...s3 }]), large);
  assertStringIncludes(
    scale,
    "| s3 | zstd | save | 3.0 | 12.6 | 4.20 | 6.0 | 25.2 | 4.20 | 200 MB | 205 MB |",
  );
  assert(!scale.includes("azure"), "rows missing from the larger run are left out");
});
