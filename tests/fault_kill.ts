/**
 * `kill -9` of a save at seeded random points, on every backend with a server
 * (s3, azure, gcs, harness, sftp; the filesystem's is in cleanup_test.ts).
 * A real save (`deno run -A main.ts`, PLUGIN_* settings) runs as a child
 * through a pass-through proxy that counts the uploaded bytes, and gets
 * SIGKILL at one of three points: before the upload (a seeded delay after the
 * start, while the runtime still loads), mid-upload (30–70 % of the archive
 * sent) and near the end (85–95 %). After each kill:
 *
 * - no visible object: the object under the key is the old complete version
 *   (a fresh restore yields exactly the old tree) or, with no old version,
 *   absent (a restore is a miss); list shows nothing else under the key;
 * - leftovers the backend keeps out of sight are counted (S3 multipart
 *   uploads, Azure uncommitted blocks, sftp temp files);
 * - a following save (with `CICACHE_STALE_AFTER_SECONDS=1`, so leftovers of
 *   the kills count as stale) sweeps them, and its tree restores exactly.
 *
 * Run by `deno task test:faults`, not `deno task test` (several child
 * processes and a server per backend).
 *
 * @module
 */
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { seededBytes } from "./backend_conformance.ts";
import { seeded } from "./fault_table.ts";
import { FAULT_BACKENDS, type Started } from "./fault_backends.ts";
import { snapshot } from "./fault_cache.ts";
import { MAIN } from "./child.ts";
import { startFaultProxy, startTcpFaultProxy } from "../scripts/servers/faults.ts";
import { run } from "../main.ts";
import { ListMultipartUploadsCommand, S3Client } from "../lib/deps/aws_client_s3.ts";
import { BlobServiceClient, StorageSharedKeyCredential } from "../lib/deps/azure_storage_blob.ts";

const MiB = 1024 * 1024;

/**
 * Backends where a killed save may leave the previous version unrestorable, and why. Harness stores a
 * multipart object as the Go plugin does: parts `<name>.part1…N` beside the manifest, so a new save overwrites
 * the old version's parts before its own manifest replaces the old one. A kill in between leaves the old
 * manifest with new parts: its restore fails the manifest's MD5 check (reported as failed, nothing
 * extracted), never a mixed tree. Still asserted there: the failure is clean, and the next save restores.
 */
export const KILL_MAY_BREAK_OLD: Record<string, string> = {
  harness: "the Go plugin's part names are shared by every save of a key",
};

/** Where a save is killed: a fraction of the archive uploaded (`before`: a delay instead). */
interface KillPoint {
  label: "before upload" | "mid-upload" | "near the end";
  fraction: number;
  delayMs: number;
}

/** The three points of a run, seeded. */
export function killPoints(seed: number): KillPoint[] {
  const r = seeded(seed);
  return [
    { label: "mid-upload", fraction: 0.3 + 0.4 * r(), delayMs: 0 },
    { label: "before upload", fraction: 0, delayMs: Math.floor(r() * 300) },
    { label: "near the end", fraction: 0.85 + 0.1 * r(), delayMs: 0 },
  ];
}

/** Whether `got` is the tree `want` (the same names, each with the same type, mode, size and digest). */
function sameTree(got: Record<string, string> | "miss" | "failed", want: Record<string, string>): boolean {
  if (typeof got === "string") return false;
  const names = Object.keys(want);
  return Object.keys(got).length === names.length && names.every((n) => got[n] === want[n]);
}

/** What one kill left. */
export interface KillOutcome {
  point: string;
  /** Request bytes the child had sent through the proxy when killed. */
  sentBytes: number;
  /**
   * The restore right after: "miss", "old" (the previous complete version), "failed" (cleanly), or "new" (only
   * after a kill near the end that landed once the last byte had reached the server: the new version, whole).
   */
  restored: "miss" | "old" | "new" | "failed";
  /** Hidden leftovers counted after the kill (undefined: the backend offers no way to see them). */
  leftovers?: number;
}

/** One backend's run: the kills, then the sweeping save. */
export interface KillRun {
  kills: KillOutcome[];
  /** Hidden leftovers after the following save. */
  leftoversAfter?: number;
  /** Hidden leftovers of a save killed near its end under a key never saved again, before its flush. */
  leftoversBeforeFlush?: number;
  /** The same after a flush of that key (which sweeps them). */
  leftoversAfterFlush?: number;
}

/** Counts what a killed save may leave out of sight under `key/`, per backend (undefined: not observable). */
async function leftovers(
  kind: string,
  env: Record<string, string>,
  key: string,
): Promise<number | undefined> {
  if (kind === "s3") {
    const client = new S3Client({
      region: env.PLUGIN_REGION,
      endpoint: env.PLUGIN_ENDPOINT,
      forcePathStyle: true,
      credentials: { accessKeyId: env.PLUGIN_ACCESS_KEY, secretAccessKey: env.PLUGIN_SECRET_KEY },
    });
    try {
      const page = await client.send(
        new ListMultipartUploadsCommand({ Bucket: env.PLUGIN_BUCKET, Prefix: `${key}/` }),
      );
      return (page.Uploads ?? []).length;
    } finally {
      client.destroy();
    }
  }
  if (kind === "azure") {
    const service = new BlobServiceClient(
      env.PLUGIN_ENDPOINT,
      new StorageSharedKeyCredential(env.PLUGIN_ACCOUNT_NAME, env.PLUGIN_ACCOUNT_KEY),
    );
    const container = service.getContainerClient(env.PLUGIN_CONTAINER);
    // A blob with uncommitted blocks only is listed with include=uncommittedblobs; a committed blob's
    // uncommitted blocks show in its block list.
    let n = 0;
    for await (const b of container.listBlobsFlat({ prefix: `${key}/`, includeUncommitedBlobs: true })) {
      const list = await container.getBlockBlobClient(b.name).getBlockList("uncommitted").catch(() =>
        undefined
      );
      n += list?.uncommittedBlocks?.length ? 1 : 0;
    }
    return n;
  }
  if (kind === "sftp") {
    let n = 0;
    try {
      for await (const e of Deno.readDir(join(env.SFTP_CACHE_ROOT, key))) {
        n += e.name.includes(".cicache-tmp-") ? 1 : 0;
      }
    } catch {
      // no directory yet
    }
    return n;
  }
  return undefined; // gcs: resumable sessions cannot be listed; harness: parts are ordinary objects
}

/**
 * Kills saves of one key at the three points, checks what is visible after each, then saves again and checks
 * that the leftovers were swept and the new tree restores. Throws (an assertion) when a rule broke.
 */
export async function runKillCase(s: Started, seed: number): Promise<KillRun> {
  const { target } = s;
  const dir = await Deno.makeTempDir({ prefix: "cicache-kill-" });
  const work = join(dir, "work");
  const key = `kill-${seed}`;
  const object = `${key}/tree`;
  const size = Math.max(8 * MiB, 2 * target.size);
  const proxy = (target.raw ? startTcpFaultProxy : startFaultProxy)(target.port, () => ({ kind: "pass" }));
  const direct = s.env(s.direct);
  const env = { ...s.env(proxy.url), PLUGIN_CACHE_KEY: key, PLUGIN_MOUNT: "tree", HOME: dir, NO_COLOR: "1" };
  const lines: string[] = [];
  const sink = (l: string) => lines.push(l);
  const write = async (version: number) => {
    await Deno.mkdir(join(work, "tree/sub"), { recursive: true });
    await Deno.writeTextFile(join(work, "tree/version.txt"), `version ${version}\n`);
    await Deno.writeFile(join(work, "tree/sub/big.bin"), seededBytes(size, seed * 10 + version));
    return await snapshot(join(work, "tree"));
  };
  /** A fresh restore (straight to the server): the tree it yields, or "miss". */
  const restore = async (): Promise<Record<string, string> | "miss" | "failed"> => {
    const into = await Deno.makeTempDir({ dir, prefix: "restore-" });
    const outputs = join(into, ".outputs");
    const code = await run([], {
      ...direct,
      PLUGIN_CACHE_KEY: key,
      PLUGIN_MOUNT: "tree",
      PLUGIN_RESTORE: "true",
      HOME: dir,
      DRONE_OUTPUT: outputs,
    }, { cwd: into, sink });
    const state = (await Deno.readTextFile(outputs)).match(/cache_state=(\w+)/)?.[1];
    assertEquals(code, 0, lines.slice(-10).join("\n"));
    if (state === "miss") return "miss";
    if (state === "failed" && target.kind in KILL_MAY_BREAK_OLD) {
      // Reported as failed, and nothing extracted: no tree, no staging directory.
      const left = (await Array.fromAsync(Deno.readDir(into))).map((e) => e.name);
      assertEquals(left, [".outputs"], `${target.kind}: a failed restore left files behind`);
      return "failed";
    }
    assertEquals(state, "complete", lines.slice(-10).join("\n"));
    return await snapshot(join(into, "tree"));
  };
  /** The names list shows under the key. */
  const listed = async () => {
    const names: string[] = [];
    for await (const o of target.owner.list(`${key}/`)) names.push(o.name);
    return names;
  };
  /** Runs the CLI as a child, kills it with SIGKILL at `point`; false when it finished first. */
  const killAt = async (
    point: KillPoint,
    extra: Record<string, string> = {},
  ): Promise<{ killed: boolean; sent: number }> => {
    const before = proxy.bytes.request;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN],
      env: { ...env, PLUGIN_REBUILD: "true", ...extra },
      cwd: work,
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    const status = child.status.then((st) => {
      exited = true;
      return st;
    });
    const deadline = Date.now() + 120_000;
    if (point.fraction === 0) await new Promise((r) => setTimeout(r, point.delayMs));
    else {
      while (!exited && Date.now() < deadline && proxy.bytes.request - before < point.fraction * size) {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const sent = proxy.bytes.request - before;
    if (!exited) child.kill("SIGKILL");
    const st = await status;
    return { killed: st.signal === "SIGKILL", sent };
  };

  const out: KillRun = { kills: [] };
  try {
    let old: Record<string, string> | undefined;
    for (const [i, point] of killPoints(seed).entries()) {
      const written = await write(100 + i);
      const { killed, sent } = await killAt(point);
      assert(killed, `${target.kind}: the save finished before the ${point.label} kill point`);
      if (point.fraction > 0) {
        assert(sent > 0, `${target.kind}: nothing was uploaded before the ${point.label} kill`);
      }
      // Nothing half-written visible: the old complete version, or none. A kill near the end can land after
      // the last byte reached the server (the 5 ms poll above lags the proxy), which then holds the new
      // version, whole: a complete object too, and from then on the one later kills must leave.
      const got = await restore();
      let restored: KillOutcome["restored"] = typeof got === "string" ? got : "old";
      if (old === undefined) {
        assertEquals(got, "miss", `${target.kind}: a killed first save (${point.label}) left an object`);
      } else if (got !== "failed") {
        if (point.label === "near the end" && sameTree(got, written)) {
          restored = "new";
          old = written;
        } else {
          assertEquals(
            got,
            old,
            `${target.kind}: after a ${point.label} kill the object is not the old version`,
          );
        }
      }
      assertEquals(await listed(), old === undefined ? [] : [object], `${target.kind}: list after a kill`);
      out.kills.push({
        point: point.label,
        sentBytes: sent,
        restored,
        leftovers: await leftovers(target.kind, direct, key),
      });
      if (i === 1 && (target.kind === "s3" || target.kind === "sftp")) {
        // What the first kill left is younger than the 1 h bound: the save in between must not have swept it.
        assert(
          (out.kills[1].leftovers ?? 0) >= 1,
          `${target.kind}: a leftover younger than the bound was swept`,
        );
      }
      if (old === undefined) {
        // A complete version, in process: the later kills must leave exactly it visible.
        const tree = await write(1);
        assertEquals(
          await run([], { ...env, PLUGIN_REBUILD: "true" }, { cwd: work, sink }),
          0,
          lines.join("\n"),
        );
        old = tree;
      }
    }
    // A following save, in a child that counts leftovers older than 1 s as stale: it sweeps them.
    await new Promise((r) => setTimeout(r, 1500));
    const final = await write(2);
    const next = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN],
      env: { ...env, PLUGIN_REBUILD: "true", CICACHE_STALE_AFTER_SECONDS: "1" },
      cwd: work,
      stdout: "null",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(next.stderr);
    assertEquals(next.code, 0, `${target.kind}: the save after the kills failed:\n${text}`);
    out.leftoversAfter = await leftovers(target.kind, direct, key);
    if (out.leftoversAfter !== undefined) {
      assertEquals(
        out.leftoversAfter,
        0,
        `${target.kind}: the save after the kills left leftovers:\n${text}`,
      );
    }
    assertEquals(await restore(), final, `${target.kind}: the tree saved after the kills does not restore`);
    for (const secret of target.secrets) assert(!text.includes(secret), "a secret reached a log line");

    // A save killed near its end under a key that is never saved again: its flush sweeps the leftovers.
    const lone = `${key}-never-saved`;
    await write(3);
    const last = await killAt({ label: "near the end", fraction: 0.9, delayMs: 0 }, {
      PLUGIN_CACHE_KEY: lone,
    });
    assert(last.killed, `${target.kind}: the save finished before the kill point`);
    out.leftoversBeforeFlush = await leftovers(target.kind, direct, lone);
    await new Promise((r) => setTimeout(r, 1500));
    const flushed = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN],
      env: { ...env, PLUGIN_CACHE_KEY: lone, PLUGIN_FLUSH: "true", CICACHE_STALE_AFTER_SECONDS: "1" },
      cwd: work,
      stdout: "null",
      stderr: "piped",
    }).output();
    const flushText = new TextDecoder().decode(flushed.stderr);
    assertEquals(flushed.code, 0, `${target.kind}: the flush failed:\n${flushText}`);
    out.leftoversAfterFlush = await leftovers(target.kind, direct, lone);
    if (out.leftoversAfterFlush !== undefined) {
      assertEquals(out.leftoversAfterFlush, 0, `${target.kind}: the flush left leftovers:\n${flushText}`);
    }
  } finally {
    await proxy.close();
    await target.owner.delete(object).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return out;
}

const OPTS = { sanitizeOps: false, sanitizeResources: false };

for (const [kind, start] of Object.entries(FAULT_BACKENDS)) {
  Deno.test({
    name:
      `kill -9: ${kind}: a save killed before, during and near the end of its upload leaves nothing visible`,
    ...OPTS,
    async fn() {
      const s = await start();
      try {
        const r = await runKillCase(s, 7);
        console.log(`${kind}: ${JSON.stringify(r)}`);
      } finally {
        await s.target.owner.close?.();
        await s.stop();
      }
    },
  });
}
