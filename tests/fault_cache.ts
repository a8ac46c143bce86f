/**
 * The fault table (tests/fault_table.ts) through save and restore of trees:
 * for each case, the CLI (`run` of main.ts, in process, the settings a user
 * gives) saves a small tree (a few files, modes, a symlink, an empty
 * directory and one file big enough for several parts and ranges) through a
 * fault proxy, then restores it into a fresh workspace through another proxy,
 * and compares the trees (content, modes, symlinks).
 *
 * Every run either completes with a verified tree or fails clearly within
 * {@link CACHE_FAULT_BOUND_MS} (derived from the settings), never hangs:
 * - a save that must fail exits 1 (`exit-code` is set), says
 *   `[IMPORTANT]`, leaves no object under the key (stat and list through a
 *   backend straight to the server), and a restore of the key is a miss;
 * - a restore that must fail exits 1, writes `cache_state=failed`, and leaves
 *   the mount exactly as it was (an older tree, byte for byte, no staging
 *   directory beside it);
 * - no log line carries a credential; a case that recovers logs its retries.
 *
 * The fault hits the first matching requests of its phase (uploads of the
 * save, downloads of the restore); on sftp (raw TCP) the first connections of
 * that phase.
 *
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { seededBytes } from "./backend_conformance.ts";
import {
  applies,
  chain,
  FAULT_POLICY,
  type FaultCase,
  type FaultRun,
  seeded,
  within,
} from "./fault_table.ts";
import type { Started } from "./fault_backends.ts";
import {
  type Fault,
  type FaultProxy,
  type ProxiedRequest,
  startFaultProxy,
  startTcpFaultProxy,
} from "../scripts/servers/faults.ts";
import { run } from "../main.ts";
import { DEFAULT_RETRY_POLICY } from "../lib/storage/transfer/retry.ts";

/**
 * Longest a failing save or restore may take with the table's CLI settings: every attempt of a request idles
 * out (`backend-operation-timeout`) after the default retries and their longest backoffs, plus slack for a
 * loaded machine (lookup, the other parts, process-local work).
 */
export const CACHE_FAULT_BOUND_MS = (() => {
  const p = DEFAULT_RETRY_POLICY;
  let backoff = 0;
  for (let i = 0; i < p.retries; i++) backoff += Math.min(p.capMs, p.baseMs * 2 ** i);
  return (p.retries + 1) * FAULT_POLICY.idleMs + backoff + 60_000;
})();

/** One entry of a tree snapshot: type, permission bits, and content or link target. */
type Entry = string;

/** Every path under `root` (not following symlinks) with its type, mode bits and content digest or target. */
export async function snapshot(root: string): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {};
  const visit = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      const info = await Deno.lstat(path);
      const mode = ((info.mode ?? 0) & 0o7777).toString(8);
      if (info.isSymlink) out[r] = `link -> ${await Deno.readLink(path)}`;
      else if (info.isDirectory) {
        out[r] = `dir ${mode}`;
        await visit(path, r);
      } else {
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
        out[r] = `file ${mode} ${info.size} ${
          Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")
        }`;
      }
    }
  };
  await visit(root, "");
  return out;
}

/** Writes the test tree under `root`: small files with several modes, a symlink, an empty dir, one big file. */
async function writeTree(root: string, bigSize: number, seed: number): Promise<void> {
  await Deno.mkdir(join(root, "bin"), { recursive: true });
  await Deno.mkdir(join(root, "sub/deep"), { recursive: true });
  await Deno.mkdir(join(root, "empty"));
  await Deno.writeTextFile(join(root, "a.txt"), `hello ${seed}\n`);
  await Deno.writeTextFile(join(root, "bin/run.sh"), "#!/bin/sh\necho run\n", { mode: 0o755 });
  await Deno.chmod(join(root, "bin/run.sh"), 0o755);
  await Deno.writeTextFile(join(root, "sub/deep/private.txt"), "only mine\n");
  await Deno.chmod(join(root, "sub/deep/private.txt"), 0o600);
  await Deno.writeFile(join(root, "sub/big.bin"), seededBytes(bigSize, seed));
  await Deno.symlink("a.txt", join(root, "link"));
  await Deno.symlink("../a.txt", join(root, "sub/up"));
}

/** Starts the proxy of one phase: the fault on the first `c.times` matching requests (or connections). */
function phaseProxy(
  s: Started,
  c: FaultCase,
  faulty: boolean,
  random: () => number,
): { proxy: FaultProxy; hits: () => number } {
  let hits = 0;
  const { target } = s;
  const decide = (r: ProxiedRequest): Fault => {
    const match = c.on === "reused"
      ? r.reused === true
      : c.on === "upload"
      ? target.isUpload(r)
      : target.isDownload(r);
    if (faulty && match && hits < c.times) {
      hits++;
      return c.fault(random);
    }
    return { kind: "pass" };
  };
  const proxy = target.raw
    ? startTcpFaultProxy(target.port, decide)
    : startFaultProxy(target.port, decide, { keepAlive: c.on === "reused" });
  return { proxy, hits: () => hits };
}

/**
 * Runs one case once through the CLI: save a tree through the proxy, restore it into a fresh workspace
 * through another, check the rules above. Throws (an assertion) when the run broke one.
 */
export async function runCacheFaultCase(s: Started, c: FaultCase, seed: number): Promise<FaultRun> {
  const { target } = s;
  assert(applies(target.raw, c), `"${c.name}" does not apply to ${target.kind}`);
  const random = seeded(seed);
  const dir = await Deno.makeTempDir({ prefix: "cicache-fault-cache-" });
  const key = `fc-${c.name.replace(/[^a-z0-9]+/gi, "-")}-${seed}`;
  const object = `${key}/tree`;
  const src = join(dir, "src");
  const dst = join(dir, "dst");
  const outputs = join(dir, "drone-output");
  const lines: string[] = [];
  const sink = (l: string) => lines.push(l);
  const base = {
    PLUGIN_CACHE_KEY: key,
    PLUGIN_MOUNT: "tree",
    PLUGIN_EXIT_CODE: "true",
    PLUGIN_LOG_LEVEL: "debug",
    HOME: dir,
    DRONE_OUTPUT: outputs,
  };
  const started = performance.now();
  let hits = 0;
  let failure: unknown;
  try {
    await writeTree(join(src, "tree"), target.size, seed);
    await Deno.mkdir(dst);
    const source = await snapshot(join(src, "tree"));

    // Save through the first proxy (faulty when the case is an upload fault).
    const save = phaseProxy(s, c, c.on === "upload", random);
    let saveCode: number;
    const t0 = performance.now();
    try {
      saveCode = await within(
        run([], { ...s.env(save.proxy.url), ...base, PLUGIN_REBUILD: "true" }, { cwd: src, sink }),
        CACHE_FAULT_BOUND_MS,
        `${target.kind} save "${c.name}"`,
      );
    } finally {
      hits += save.hits();
      await save.proxy.close();
    }
    const saveMs = performance.now() - t0;
    const saveFails = c.on === "upload" && c.expect === "fail";
    if (saveFails) {
      assertEquals(saveCode, 1, `the failed save should exit 1 (exit-code set):\n${lines.join("\n")}`);
      assert(saveMs < CACHE_FAULT_BOUND_MS, `the save failed after ${saveMs} ms, more than the bound`);
      assert(lines.some((l) => l.includes("[IMPORTANT]")), "the failed save was not reported");
      assertEquals(await target.owner.stat(object), null, "a failed save left an object");
      const listed = [];
      for await (const o of target.owner.list(`${key}/`)) listed.push(o.name);
      assertEquals(listed, [], "a failed save left objects under the key");
    } else {
      assertEquals(saveCode, 0, `the save should succeed:\n${lines.join("\n")}`);
      assert((await target.owner.stat(object)) !== null, "the save stored no object");
    }

    // Restore through the second proxy (faulty when the case is a download fault) into `dst`.
    const restoreFails = c.on === "download" && c.expect === "fail";
    if (restoreFails) {
      // An older tree is in place: a failed restore must leave it exactly as it was.
      await Deno.mkdir(join(dst, "tree"));
      await Deno.writeTextFile(join(dst, "tree/old.txt"), "the previous build's file\n");
      await Deno.symlink("old.txt", join(dst, "tree/old-link"));
    }
    const before = await snapshot(dst);
    // A stalled reused connection is a case of the restore's ranged reads (and the stat before them).
    const restore = phaseProxy(s, c, c.on === "download" || c.on === "reused", random);
    let restoreCode: number;
    const t1 = performance.now();
    try {
      restoreCode = await within(
        run([], { ...s.env(restore.proxy.url), ...base, PLUGIN_RESTORE: "true" }, { cwd: dst, sink }),
        CACHE_FAULT_BOUND_MS,
        `${target.kind} restore "${c.name}"`,
      );
    } finally {
      hits += restore.hits();
      await restore.proxy.close();
    }
    const restoreMs = performance.now() - t1;
    const state = (await Deno.readTextFile(outputs).catch(() => "")).match(/cache_state=(\w+)/)?.[1];
    if (saveFails) {
      // Nothing was stored: a miss (exit 1 with exit-code), and the workspace untouched.
      assertEquals(restoreCode, 1, lines.join("\n"));
      assertEquals(state, "miss", "a restore after a failed save must be a miss");
      assertEquals(await snapshot(dst), before, "a miss changed the workspace");
    } else if (restoreFails) {
      assertEquals(restoreCode, 1, `the failed restore should exit 1 (exit-code set):\n${lines.join("\n")}`);
      assert(
        restoreMs < CACHE_FAULT_BOUND_MS,
        `the restore failed after ${restoreMs} ms, more than the bound`,
      );
      assertEquals(state, "failed", "the failed restore is not reported as cache_state=failed");
      assertEquals(await snapshot(dst), before, "a failed restore changed the mount or left staging behind");
    } else {
      assertEquals(restoreCode, 0, `the restore should succeed:\n${lines.join("\n")}`);
      assertEquals(state, "complete", "cache_state");
      assertEquals(await snapshot(join(dst, "tree")), source, "the restored tree differs from the saved one");
      assertEquals(
        Object.keys(await snapshot(dst)).filter((p) => !p.startsWith("tree")),
        [],
        "something beside the mount was left (staging?)",
      );
    }
    assert(hits > 0, `the proxy never applied "${c.name}"`);
    if (c.expect === "ok" && c.times !== Infinity && c.fault(seeded(seed)).kind !== "trickle") {
      assert(lines.some((l) => l.startsWith("level=warn") && l.includes("retrying")), "no retry line");
    }
    for (const secret of target.secrets) {
      assert(!lines.some((l) => l.includes(secret)), `a secret reached a log line`);
    }
  } catch (err) {
    failure = err;
  } finally {
    await target.owner.delete(object).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  if (failure !== undefined) {
    const tail = lines.filter((l) => /level=(warn|error)/.test(l)).slice(-6).join("\n");
    throw new Error(`${target.kind} "${c.name}" (seed ${seed}): ${chain(failure).join(" <- ")}\n${tail}`);
  }
  return { ok: c.expect === "ok", ms: performance.now() - started };
}
