/**
 * `deno task soak`: runs the fault table and the load case on every cloud
 * backend (s3 on Swift, azure on Azurite, gcs on the emulator, harness on its
 * fake in front of Swift, sftp on OpenSSH with the raw-TCP cases only) many
 * times, at the backend level and through save and restore of a tree (lines
 * `<backend>: tree: <case>`), and prints one line per case: runs, passes, max
 * time, peak RSS. A run that
 * breaks a rule (hangs past the bound, leaves a partial object, wrong bytes,
 * a secret in a line) counts as a failure and its first error is printed.
 *
 * Usage: `deno task soak [runs-per-case] [backend…]` (default 3 runs, all
 * backends; a few minutes on a quiet machine).
 *
 * @module
 */
import { applies, FAULT_CASES, runFaultCase, runLoadCase } from "../tests/fault_table.ts";
import { FAULT_BACKENDS, LOAD_DOES_NOT_HOLD, RAW_TCP_BACKENDS } from "../tests/fault_backends.ts";
import { runCacheFaultCase } from "../tests/fault_cache.ts";

const runs = Math.max(1, Number(Deno.args[0] ?? "3") || 3);
const only = Deno.args.slice(1);
let failures = 0;

/** Runs `fn` `runs` times and prints its line. */
async function soak(label: string, fn: (run: number) => Promise<unknown>): Promise<void> {
  let passes = 0;
  let maxMs = 0;
  let peak = Deno.memoryUsage().rss;
  let firstError = "";
  const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 100);
  for (let run = 0; run < runs; run++) {
    const t0 = performance.now();
    try {
      await fn(run);
      passes++;
    } catch (err) {
      firstError ||= String(err instanceof Error ? err.message : err).split("\n")[0].slice(0, 200);
    }
    maxMs = Math.max(maxMs, performance.now() - t0);
  }
  clearInterval(sampler);
  peak = Math.max(peak, Deno.memoryUsage().rss);
  if (passes < runs) failures++;
  console.log(
    `${label.padEnd(72)} runs=${runs} passes=${passes} max=${(maxMs / 1000).toFixed(1)}s ` +
      `peak_rss=${Math.round(peak / 2 ** 20)}MiB${firstError ? ` first_error="${firstError}"` : ""}`,
  );
}

for (const [kind, start] of Object.entries(FAULT_BACKENDS)) {
  if (only.length > 0 && !only.includes(kind)) continue;
  const started = await start();
  try {
    const cases = FAULT_CASES.filter((c) => applies(RAW_TCP_BACKENDS.includes(kind), c));
    for (const c of cases) {
      await soak(`${kind}: ${c.name}`, (run) => runFaultCase(started.target, c, 1000 + run * 7919));
    }
    // The same table through save and restore of a tree (the CLI, in process).
    for (const c of cases) {
      await soak(`${kind}: tree: ${c.name}`, (run) => runCacheFaultCase(started, c, 3000 + run * 7919));
    }
    if (kind in LOAD_DOES_NOT_HOLD) {
      console.log(`${kind}: load, 8 saves + 8 restores of one key: not run (${LOAD_DOES_NOT_HOLD[kind]})`);
      continue;
    }
    await soak(`${kind}: load, 8 saves + 8 restores of one key`, async (run) => {
      const out = await runLoadCase(started.target, 5000 + run);
      if (
        out.complete !== 8 || out.saved + out.lost !== 8 ||
        out.saved === 0
      ) {
        throw new Error(JSON.stringify(out));
      }
    });
  } finally {
    await started.target.owner.close?.();
    await started.stop();
  }
}
Deno.exit(failures > 0 ? 1 : 0);
