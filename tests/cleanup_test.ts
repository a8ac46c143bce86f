/**
 * Cancelled and killed builds (lib/cache/cleanup.ts): SIGINT/SIGTERM abort a
 * running save or restore of the real CLI (a child process on the
 * filesystem backend), clean up, log one line and exit 130/143; `kill -9`
 * leaves no visible object, and later saves/flushes/restores sweep what it
 * left once it is older than the bound.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import {
  cancelAndClean,
  cancelSignal,
  installSignalHandlers,
  onCancel,
  sweepStaleStaging,
} from "../lib/cache/cleanup.ts";
import { FilesystemBackend } from "../lib/storage/filesystem/backend.ts";
import { capture } from "./support.ts";
import { interrupt, MAIN, walk, writeRandomTree } from "./child.ts";

const MiB = 1024 * 1024;

/** The CLI settings of a save in {@link withTree}'s workspace (gzip: slow enough to be caught mid-way). */
const SAVE = { PLUGIN_REBUILD: "true", PLUGIN_ARCHIVE_FORMAT: "gzip" };

/**
 * Runs `fn` in a fresh temp dir holding `work/big` (`files` random files, 16 MiB in all) and an empty
 * filesystem cache root `cache`, with the CLI settings (PLUGIN_*) of mount `big` under key `k` there.
 */
async function withTree(
  prefix: string,
  files: number,
  fn: (dir: string, base: Record<string, string>) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await writeRandomTree(`${dir}/work/big`, files, 16 * MiB);
    await Deno.mkdir(`${dir}/cache`);
    await fn(dir, {
      PLUGIN_BACKEND: "filesystem",
      PLUGIN_FILESYSTEM_CACHE_ROOT: `${dir}/cache`,
      PLUGIN_MOUNT: "big",
      PLUGIN_CACHE_KEY: "k",
      HOME: dir,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cleanup: a signal aborts the run's signal, runs the registered clean-ups, logs one line, exits 143", async () => {
  const { log, lines } = capture();
  const codes: number[] = [];
  const done = Promise.withResolvers<void>();
  const uninstall = installSignalHandlers(log, (code) => {
    codes.push(code);
    done.resolve();
  });
  try {
    let cleaned = false;
    onCancel("temp thing removed", () => cleaned = true);
    const unregistered = onCancel("never runs", () => {
      throw new Error("unregistered clean-up ran");
    });
    unregistered();
    const signal = cancelSignal();
    // SIGTERM: the test runner itself owns SIGINT (the CLI tests below send SIGINT to a child).
    const keepAlive = setTimeout(() => {}, 30_000); // the signal arrives asynchronously
    Deno.kill(Deno.pid, "SIGTERM");
    await done.promise;
    clearTimeout(keepAlive);
    assertEquals(codes, [143]);
    assert(cleaned, "the registered clean-up did not run");
    assert(signal.aborted, "the transfer signal was not aborted");
    const errors = lines.filter((l) => l.startsWith("level=error"));
    assertEquals(errors.length, 1);
    assert(errors[0].includes("cancelled by SIGTERM") && errors[0].includes("temp thing removed"), errors[0]);
  } finally {
    await uninstall();
  }
  assert(!cancelSignal().aborted, "the next run gets a fresh signal");
  assertEquals(await cancelAndClean("test"), []);
  await installSignalHandlers(log, () => {})(); // reset after cancelAndClean
});

Deno.test("cleanup: SIGINT during a save removes the temp file, leaves no object, exits 130", async () => {
  await withTree("cicache-cancel-", 12, async (dir, base) => {
    const env = { ...base, ...SAVE };
    const tempSeen = async () => (await walk(`${dir}/cache`)).some((p) => p.includes(".cicache-tmp-"));
    const run = await interrupt(env, `${dir}/work`, tempSeen, "SIGINT");
    assert(run.sent, `the save ended before a temp file appeared:\n${run.stderr}`);
    assertEquals(run.code, 130, run.stderr);
    const lines = run.stderr.split("\n").filter((l) => l.includes(`msg="cancelled by SIGINT`));
    assertEquals(lines.length, 1, run.stderr);
    assert(lines[0].includes("upload of k/big aborted"), lines[0]);
    const left = await walk(`${dir}/cache`);
    assert(!left.some((p) => p.includes(".cicache-tmp-")), `temp files left: ${left.join(", ")}`);
    assertEquals(await new FilesystemBackend(`${dir}/cache`).stat("k/big"), null);
  });
});

Deno.test("cleanup: SIGTERM during a restore removes the staging directory and exits 143", async () => {
  await withTree("cicache-cancel-", 12, async (dir, base) => {
    const saved = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN],
      env: { ...base, PLUGIN_REBUILD: "true" },
      cwd: `${dir}/work`,
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(saved.code, 0);
    await Deno.mkdir(`${dir}/fresh`);
    const staging = async () => (await walk(`${dir}/fresh`)).some((p) => p.includes(".big.cicache-"));
    const run = await interrupt({ ...base, PLUGIN_RESTORE: "true" }, `${dir}/fresh`, staging, "SIGTERM");
    assert(run.sent, `the restore ended before staging appeared:\n${run.stderr}`);
    assertEquals(run.code, 143, run.stderr);
    const lines = run.stderr.split("\n").filter((l) => l.includes(`msg="cancelled by SIGTERM`));
    assertEquals(lines.length, 1, run.stderr);
    assert(lines[0].includes("staging directory"), lines[0]);
    assertEquals(await walk(`${dir}/fresh`), [], "the restore left something in the workspace");
  });
});

Deno.test("cleanup: kill -9 of a save at random points leaves no visible object; the stale temp file is swept", async () => {
  await withTree("cicache-kill-", 8, async (dir, base) => {
    const env = { ...base, ...SAVE };
    const backend = new FilesystemBackend(`${dir}/cache`);
    for (let round = 0; round < 3; round++) {
      const delay = 20 + Math.floor(Math.random() * 40);
      let polls = 0;
      const run = await interrupt(env, `${dir}/work`, async () => {
        const temp = (await walk(`${dir}/cache`)).some((p) => p.includes(".cicache-tmp-"));
        return temp && ++polls >= delay / 20;
      }, "SIGKILL");
      if (!run.sent) continue; // finished first: nothing to check this round
      assertEquals(await backend.stat("k/big"), null, "a killed save left a visible object");
      assertEquals(await Array.fromAsync(backend.list("k/")), []);
    }
    const before = (await walk(`${dir}/cache`)).filter((p) => p.includes(".cicache-tmp-"));
    assert(before.length > 0, "kill -9 should leave a temp file to sweep");
    assertEquals(
      await backend.sweepStale("k/", 60 * 60 * 1000),
      0,
      "young temp files stay (a save may be running)",
    );
    const removed = await backend.sweepStale("k/", 0);
    assert(removed >= before.length, `swept ${removed} of ${before.length}`);
    assert(
      !(await walk(`${dir}/cache`)).some((p) => p.includes(".cicache-tmp-")),
      "temp files left after the sweep",
    );
  });
});

Deno.test("cleanup: stale staging directories of killed restores are swept, young ones stay", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cicache-sweep-" });
  try {
    await Deno.mkdir(`${dir}/.node_modules.cicache-0123abcd/pkg`, { recursive: true });
    await Deno.mkdir(`${dir}/.node_modules.cicache-89abcdef`);
    await Deno.mkdir(`${dir}/.node_modules.other`);
    const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await Deno.utime(`${dir}/.node_modules.cicache-0123abcd`, old, old);
    await Deno.utime(`${dir}/.node_modules.other`, old, old);
    const { log, lines } = capture();
    const removed = await sweepStaleStaging(`${dir}/node_modules`, log);
    assertEquals(removed, [`${dir}/.node_modules.cicache-0123abcd`]);
    const left = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assertEquals(left, [".node_modules.cicache-89abcdef", ".node_modules.other"]);
    assert(lines.some((l) => l.includes("stale staging")), lines.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
