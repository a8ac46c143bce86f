/**
 * Benchmark helper: moves one file to or from a backend with the settings in
 * the environment, standing in for the upload/download step of the shell
 * pipeline the benchmark compares against (`aws s3 cp`, `az storage blob
 * upload`, …). On the filesystem backend the pipeline writes straight into the
 * cache volume, so the file is moved (or linked) rather than copied.
 *
 * `stat` does the fixed part only (start-up, settings, opening the backend,
 * one request): the bench subtracts its CPU to get the transfer's cost per GB.
 *
 * Usage: `deno run -A scripts/bench_transfer.ts put|get|stat <object> <file>`
 *
 * @module
 */
import { join } from "node:path";
import { loadSettings } from "../lib/settings.ts";
import { Logger } from "../lib/log.ts";
import { openBackend } from "../lib/storage/open.ts";

const [op, object, file] = Deno.args;
const loaded = loadSettings([op === "put" ? "save" : "restore"], Deno.env.toObject());
if (loaded.kind !== "run") throw new Error("bad settings");
const settings = loaded.settings;
if (settings.backend === "filesystem") {
  if (op === "stat") Deno.exit(0);
  const target = join(settings.filesystemCacheRoot, object);
  if (op === "put") {
    await Deno.mkdir(join(target, ".."), { recursive: true });
    await Deno.rename(file, target);
  } else {
    await Deno.symlink(target, file);
  }
} else {
  const backend = await openBackend(settings, new Logger({ level: "warn" }));
  if (op === "put") {
    const f = await Deno.open(file);
    await backend.put(object, f.readable, {});
  } else if (op === "stat") {
    await backend.stat(object);
  } else {
    const out = await Deno.open(file, { write: true, create: true, truncate: true });
    await (await backend.get(object)).pipeTo(out.writable);
  }
  await backend.close?.();
}
