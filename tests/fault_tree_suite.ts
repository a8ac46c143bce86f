/**
 * The fault table (tests/fault_table.ts) through save and restore of a tree
 * (tests/fault_cache.ts: the CLI in process, a verified tree or a clear
 * failure, never a half tree) on every backend against its real test server.
 * Run by `deno task test:faults` and repeated by `deno task soak`, not by
 * `deno task test`: a case takes a whole save and restore, which would add
 * minutes to the regular run, whose backend-level table
 * (tests/faults_test.ts) covers the same faults on the same transfer code.
 * Each server is started once for this file and stopped by the last test of
 * its backend (and by its watchdog should the run die).
 *
 * @module
 */
import { applies, FAULT_CASES, faultRuns } from "./fault_table.ts";
import { FAULT_BACKENDS, RAW_TCP_BACKENDS, type Started } from "./fault_backends.ts";
import { runCacheFaultCase } from "./fault_cache.ts";

const OPTS = { sanitizeOps: false, sanitizeResources: false };

for (const [kind, start] of Object.entries(FAULT_BACKENDS)) {
  let started: Promise<Started> | undefined;
  const get = () => started ??= start();
  const cases = FAULT_CASES.filter((c) => applies(RAW_TCP_BACKENDS.includes(kind), c));
  cases.forEach((c, i) => {
    Deno.test({
      name: `faults through save and restore of a tree: ${kind}: ${c.name} (${
        c.expect === "ok" ? "verified tree" : "fails clearly"
      })`,
      ...OPTS,
      async fn() {
        const s = await get();
        try {
          for (let run = 0; run < faultRuns(); run++) {
            await runCacheFaultCase(s, c, 3 + run * 7919 + c.name.length);
          }
        } finally {
          if (i === cases.length - 1) {
            await s.target.owner.close?.();
            await s.stop();
          }
        }
      },
    });
  });
}
