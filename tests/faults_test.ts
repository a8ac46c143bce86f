/**
 * The fault table (tests/fault_table.ts) at the backend level on every
 * backend against its real test server: s3 on Swift, azure on Azurite, gcs
 * on the emulator, harness on its fake in front of Swift, sftp on OpenSSH
 * (raw-TCP faults only). One run per case in `deno task test`
 * (`CICACHE_FAULT_RUNS` raises it; `deno task soak` repeats the table), plus
 * the load case and endpoints that never answer (a TLS handshake that
 * stalls, an unresolvable host). The same table through save and restore of
 * a tree, and the kill -9 cases, run by `deno task test:faults`
 * (tests/fault_tree_suite.ts, tests/fault_kill.ts). Each server is started
 * once for this file and stopped by the last test of its backend (and by its
 * watchdog should the run die).
 *
 * @module
 */
import { assert } from "./assert.ts";
import {
  applies,
  FAULT_CASES,
  faultRuns,
  runDnsCase,
  runFaultCase,
  runLoadCase,
  runUnreachableCase,
} from "./fault_table.ts";
import { FAULT_BACKENDS, LOAD_DOES_NOT_HOLD, RAW_TCP_BACKENDS, type Started } from "./fault_backends.ts";
import { startTlsStall, UNRESOLVABLE_HOST } from "../scripts/servers/faults.ts";

const OPTS = { sanitizeOps: false, sanitizeResources: false };

for (const [kind, start] of Object.entries(FAULT_BACKENDS)) {
  let started: Promise<Started> | undefined;
  const get = () => started ??= start();
  const raw = RAW_TCP_BACKENDS.includes(kind);
  for (const c of FAULT_CASES) {
    const ok = applies(raw, c);
    Deno.test({
      name: `faults: ${kind}: ${c.name} (${
        !ok ? "does not apply to a raw TCP stream" : c.expect === "ok" ? "recovers" : "fails within the bound"
      })`,
      ignore: !ok,
      ...OPTS,
      async fn() {
        const { target } = await get();
        for (let run = 0; run < faultRuns(); run++) {
          await runFaultCase(target, c, 1 + run * 7919 + c.name.length);
        }
      },
    });
  }
  Deno.test({
    name: `load: ${kind}: 8 concurrent saves and 8 concurrent restores of one key${
      LOAD_DOES_NOT_HOLD[kind] ? ` (does not hold: ${LOAD_DOES_NOT_HOLD[kind]})` : ""
    }`,
    ignore: kind in LOAD_DOES_NOT_HOLD,
    ...OPTS,
    async fn() {
      const { target } = await get();
      for (let run = 0; run < faultRuns(); run++) {
        const out = await runLoadCase(target, 1 + run);
        assert(out.complete === 8, `restores: ${JSON.stringify(out)}`);
        assert(out.saved + out.lost === 8 && out.saved > 0, `saves: ${JSON.stringify(out)}`);
      }
    },
  });
  // A TLS handshake is HTTP's (https) concern; sftp speaks SSH from the first byte.
  for (const mode of raw ? [] : ["silent", "half"] as const) {
    Deno.test({
      name: `faults: ${kind}: a TLS handshake that stalls (${
        mode === "silent" ? "no answer to the ClientHello" : "half a ServerHello"
      }) fails within the bound, naming the endpoint`,
      ...OPTS,
      async fn() {
        const { target } = await get();
        const tls = startTlsStall(mode);
        try {
          const run = await runUnreachableCase(target, tls.url, "TLS handshake stall");
          const host = new URL(tls.url).host;
          assert(run.error?.includes(host), `the error does not name ${host}: ${run.error}`);
          assert(tls.accepted() > 1, `the client did not retry (${tls.accepted()} connections)`);
        } finally {
          await tls.close();
        }
      },
    });
  }
  Deno.test({
    name: `faults: ${kind}: an unresolvable host fails clearly and quickly`,
    ...OPTS,
    async fn() {
      const s = await get();
      try {
        const run = await runDnsCase(s.target, `http://${UNRESOLVABLE_HOST}:80`);
        assert(/resolve|dns|ENOTFOUND|reach|lookup|not found/i.test(run.error ?? ""), run.error);
      } finally {
        await s.target.owner.close?.();
        await s.stop();
      }
    },
  });
}
