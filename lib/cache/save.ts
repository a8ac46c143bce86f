/**
 * Save: for each mount, walk → tar → compress → stream upload, with bounded
 * concurrency across mounts. A missing mount is reported by name while the
 * other mounts still save; `override=false` skips mounts whose object exists
 * (a metadata call, never a download).
 *
 * @module
 */
import { resolve } from "node:path";
import type { ArchiveFormat } from "../archive/compression.ts";
import type { Backend, TransferOptions } from "../storage/backend.ts";
import { type Logger, ProgressMeter } from "../log.ts";
import { type Settings, SettingsError } from "../settings.ts";
import { expandMount, LAYOUT_VERSION, META, objectName } from "./layout.ts";
import { logOutcome, mapBounded, type MountOutcome, reasonOf } from "./outcome.ts";
import { cancelSignal, onCancel, sweepStaleStaging } from "./cleanup.ts";

/** Everything an operation needs. */
export interface OpContext {
  settings: Settings;
  backend: Backend;
  log: Logger;
  /** The rendered cache key. */
  key: string;
  env: Record<string, string | undefined>;
  cwd: string;
  /** Save: absolute paths left out of every archive (the exclude patterns, see mounts.ts). */
  exclude?: (path: string) => boolean;
}

/** Mounts processed at once (each transfer has its own internal concurrency). */
export const MOUNT_CONCURRENCY = 3;

/**
 * Saves every mount under the key and returns one outcome per mount.
 *
 * @example
 * ```ts
 * const outcomes = await saveMounts(ctx, ["node_modules"]);
 * ```
 */
export function saveMounts(ctx: OpContext, mounts: readonly string[]): Promise<MountOutcome[]> {
  validateMounts(ctx, mounts);
  return mapBounded(mounts, MOUNT_CONCURRENCY, async (mount) => {
    const outcome = await saveMount(ctx, mount);
    logOutcome(ctx.log, "save", outcome);
    return outcome;
  });
}

/**
 * Checks every mount's object name (a `..` that climbs out, a mount that
 * names no path) before any transfer starts, so that one bad mount never
 * aborts uploads already running: all problems are reported at once as a
 * {@link SettingsError}.
 *
 * @example
 * ```ts
 * validateMounts(ctx, ["node_modules", "../../etc"]); // throws: mount "../../etc" climbs out …
 * ```
 */
export function validateMounts(ctx: OpContext, mounts: readonly string[]): void {
  const problems: string[] = [];
  for (const mount of mounts) {
    try {
      objectName(ctx.settings.remoteRoot, ctx.key, expandMount(mount, ctx.env), ctx.env);
    } catch (err) {
      if (!(err instanceof SettingsError)) throw err;
      problems.push(err.message);
    }
  }
  if (problems.length > 0) {
    throw new SettingsError(`PLUGIN_MOUNT: nothing was saved: ${problems.join("; ")}`);
  }
}

async function saveMount(ctx: OpContext, mount: string): Promise<MountOutcome> {
  const { settings, backend, log } = ctx;
  const expanded = expandMount(mount, ctx.env);
  const object = objectName(settings.remoteRoot, ctx.key, expanded, ctx.env);
  const path = resolve(ctx.cwd, expanded);
  try {
    await Deno.lstat(path);
  } catch {
    return {
      mount,
      object,
      status: "failed",
      reason:
        `mount ${mount} does not exist at ${path}: make sure the directory or file exists and is readable`,
    };
  }
  try {
    if (!settings.override) {
      const existing = await backend.stat(object);
      if (existing) {
        return { mount, object, status: "skipped", reason: "object exists and override is false" };
      }
    }
    await sweepStaleStaging(path, log);
    const started = performance.now();
    // Loaded here, not at start-up: a restore, or a save that is skipped, never needs the packer or node:zlib.
    const [{ pack }, { compressStream }] = await Promise.all([
      import("../archive/pack.ts"),
      import("../archive/compression.ts"),
    ]);
    const archive = pack({
      mount: expanded,
      cwd: ctx.cwd,
      skipSymlinks: settings.skipSymlinks,
      preserveMetadata: settings.preserveMetadata,
      log,
      exclude: ctx.exclude,
    });
    const meter = new ProgressMeter(log, "upload", { mount, object });
    const format = settings.archiveFormat as ArchiveFormat;
    // Chunk memory goes back to the packer once used: copied into compression blocks, or (tar) written by a
    // backend that supports `release`. Uncompressed tar skips the compression stage (no pass-through hop).
    // Compressed chunks go back to the compressor the same way, for the next frames.
    const tar = format === "tar";
    const compressor = tar ? undefined : compressStream(format, settings.compressionLevel, {
      release: archive.release,
    });
    const archived = compressor ? archive.stream.pipeThrough(compressor) : archive.stream;
    const body = archived.pipeThrough(meter.stream());
    const transfer: TransferOptions = {
      signal: cancelSignal(),
      release: compressor?.release ?? archive.release,
    };
    // On a signal the put aborts and cleans up (multipart abort, session cancel, temp file) before it rejects.
    const putting = backend.put(object, body, {
      [META.format]: settings.archiveFormat,
      [META.version]: LAYOUT_VERSION,
      [META.root]: archive.root,
      [META.mount]: mount,
    }, transfer);
    const registered = onCancel(`${backend.kind} upload of ${object} aborted`, () => putting.catch(() => {}));
    try {
      await putting;
    } finally {
      registered();
      meter.stop();
    }
    const stats = await archive.stats;
    return {
      mount,
      object,
      status: "saved",
      rawBytes: stats.bytes,
      storedBytes: meter.bytes,
      files: stats.files,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (err) {
    return { mount, object, status: "failed", reason: reasonOf(err) };
  }
}
