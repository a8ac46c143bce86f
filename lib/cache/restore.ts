/**
 * Restore: find the objects to restore (the exact key, else the newest cache
 * under the first matching `restore-keys` prefix), then for each one stream
 * download → decompress → safe extraction. Explicit mounts fetch
 * `<key>/<mount>` directly; no mounts lists under the key with the Go
 * plugin's strict matching (A§2.6.2), and each object's target must lie
 * where a listing restore may write (see `confine.ts`). A corrupt,
 * truncated or unsafe object is a failure, never a miss, and leaves the
 * mount as it was (the archive is staged and verified first). Writes the
 * metrics file (A§2.9); the step outputs are the caller's
 * (`writeStepOutputs` in outcome.ts), so a restore that throws still reports
 * `cache_state=failed`.
 *
 * @module
 */
import { dirname } from "node:path";
import { CorruptArchiveError, UnsafeArchiveError } from "../archive/errors.ts";
import { cleanPath } from "../archive/paths.ts";
import { isStorageError, type ObjectInfo } from "../storage/backend.ts";
import { ProgressMeter } from "../log.ts";
import { expandMount, keyPrefix, META, mountObjectPath, objectName } from "./layout.ts";
import { logOutcome, mapBounded, type MountOutcome, reasonOf } from "./outcome.ts";
import { MOUNT_CONCURRENCY, type OpContext } from "./save.ts";
import { globObjectMatcher, isGlobMount, loadGlobEngine } from "./mounts.ts";
import { confineListingTarget } from "./confine.ts";
import { cancelSignal } from "./cleanup.ts";

/** One object chosen for restore, and where it goes. */
export interface Planned {
  mount: string;
  object: string;
  info?: ObjectInfo;
  /** The configured mount (literal or glob) this object answers; none in listing mode. */
  from?: string;
  /** Listing restore: the object chose the target, so it is confined (explicit mounts are the user's). */
  listed?: boolean;
  /** Listing restore: why the object's metadata was refused (then it is not restored). */
  refused?: string;
}

/** What a restore found and did. */
export interface RestoreResult {
  /** `exact`: the key itself; `fallback`: a restore-keys prefix; `miss`: nothing. */
  match: "exact" | "fallback" | "miss";
  /** The key the restored objects were saved under. */
  matchedKey?: string;
  outcomes: MountOutcome[];
}

/**
 * Restores the mounts (or, with none, everything under the key) and writes
 * the metrics file.
 *
 * @example
 * ```ts
 * const result = await restoreMounts(ctx, ["node_modules"], ["npm-"]);
 * ```
 */
export async function restoreMounts(
  ctx: OpContext,
  mounts: readonly string[],
  restoreKeys: readonly string[],
): Promise<RestoreResult> {
  const { match, matchedKey, plan } = await findCache(ctx, mounts, restoreKeys, true);
  let outcomes: MountOutcome[];
  if (match === "miss") {
    outcomes = mounts.map((mount) => ({
      mount,
      object: safeObjectName(ctx, mount),
      status: "miss" as const,
      reason: "no cache under this key",
    }));
    if (mounts.length === 0) ctx.log.warn("restore: cache miss: no objects under the key", { key: ctx.key });
  } else {
    const targets = mounts.length > 0 ? targetsOf(mounts, plan) : plan.map((p) => ({ mount: p.mount, p }));
    outcomes = await mapBounded(targets, MOUNT_CONCURRENCY, async ({ mount, p }) => {
      if (p) return await restoreOne(ctx, p);
      const missing: MountOutcome = {
        mount,
        object: safeObjectName(ctx, mount),
        status: "miss",
        reason: `no object for this mount under key ${matchedKey}`,
      };
      logOutcome(ctx.log, "restore", missing);
      return missing;
    });
  }
  const result: RestoreResult = { match, matchedKey: match === "miss" ? undefined : matchedKey, outcomes };
  await writeMetrics(ctx, outcomes);
  return result;
}

/**
 * Finds the cache to restore: the exact key, else the newest cache under the
 * first matching restore key. With `resolve` false (lookup-only) listed
 * objects are not inspected further: no metadata call per object, no
 * download of a first header.
 */
export async function findCache(
  ctx: OpContext,
  mounts: readonly string[],
  restoreKeys: readonly string[],
  resolve: boolean,
): Promise<{ match: RestoreResult["match"]; matchedKey: string; plan: Planned[] }> {
  await loadGlobEngine(mounts);
  let match: RestoreResult["match"] = "exact";
  let matchedKey = ctx.key;
  let plan = await planExact(ctx, mounts, resolve);
  if (plan.length === 0) {
    match = "miss";
    for (const prefix of restoreKeys) {
      const found = await planFallback(ctx, mounts, prefix, resolve);
      if (found) {
        match = "fallback";
        matchedKey = found.key;
        plan = found.plan;
        ctx.log.info("restore: exact key missed; using the newest cache under a restore key", {
          restore_key: prefix,
          matched_key: found.key,
        });
        break;
      }
    }
  }
  return { match, matchedKey, plan };
}

/** One target per literal mount, every match of a glob mount (or one miss for a glob without any). */
export function targetsOf(
  mounts: readonly string[],
  plan: readonly Planned[],
): { mount: string; p?: Planned }[] {
  return mounts.flatMap((mount) => {
    const found = plan.filter((p) => p.from === mount);
    return found.length > 0 ? found.map((p) => ({ mount: p.mount, p })) : [{ mount }];
  });
}

function safeObjectName(ctx: OpContext, mount: string): string {
  if (isGlobMount(mount)) return "";
  try {
    return objectName(ctx.settings.remoteRoot, ctx.key, expandMount(mount, ctx.env), ctx.env);
  } catch {
    return "";
  }
}

/**
 * Explicit mounts: stat `<key>/<mount>` for each literal one; glob mounts
 * match the object names listed under the key (so they restore into a fresh
 * checkout too). No mounts: list under the key.
 */
async function planExact(ctx: OpContext, mounts: readonly string[], resolve = true): Promise<Planned[]> {
  if (mounts.length > 0) {
    const literal = mounts.filter((m) => !isGlobMount(m));
    const planned = await mapBounded(literal, 8, async (mount): Promise<Planned | undefined> => {
      const object = objectName(ctx.settings.remoteRoot, ctx.key, expandMount(mount, ctx.env), ctx.env);
      const info = await ctx.backend.stat(object);
      return info ? { mount, object, info, from: mount } : undefined;
    });
    const globs = mounts.filter(isGlobMount);
    const globbed = globs.length > 0 ? await planGlobs(ctx, globs) : [];
    return [...planned.filter((p): p is Planned => p !== undefined), ...globbed];
  }
  return await planListing(ctx, keyPrefix(ctx.settings.remoteRoot, ctx.key), resolve);
}

/** Objects under `<key>/` whose mount part matches a glob mount, each restored to its own path. */
async function planGlobs(ctx: OpContext, globs: readonly string[]): Promise<Planned[]> {
  const prefix = `${keyPrefix(ctx.settings.remoteRoot, ctx.key)}/`;
  const matchers = globs.map((g) => ({ glob: g, ...globObjectMatcher(g, ctx.env) }));
  const planned: Planned[] = [];
  for await (const info of ctx.backend.list(prefix)) {
    if (!info.name.startsWith(prefix)) continue;
    const rel = info.name.slice(prefix.length);
    const m = matchers.find((x) => x.match(rel));
    if (m) planned.push({ mount: m.mountOf(rel), object: info.name, info, from: m.glob });
  }
  if (planned.length === 0) {
    ctx.log.warn("restore: glob mount matched no object under the key", {
      mounts: globs.join(","),
      key: ctx.key,
    });
  }
  return planned;
}

/**
 * Listing mode (A§2.6.2). With strict matching (the default) only objects
 * under `<key>/` count, so key `abc` never restores `abc1/…`; without it,
 * everything the plain prefix listing returns counts, and the first path
 * segment after the prefix is taken as the key's.
 */
async function planListing(ctx: OpContext, prefix: string, resolve = true): Promise<Planned[]> {
  const { strictKeyMatching, enableCacheKeySeparator } = ctx.settings;
  const listPrefix = enableCacheKeySeparator || strictKeyMatching ? `${prefix}/` : prefix;
  const planned: Planned[] = [];
  for await (const info of ctx.backend.list(listPrefix)) {
    const rel = relativeMount(info.name, prefix);
    if (rel === undefined || (strictKeyMatching && !info.name.startsWith(`${prefix}/`))) continue;
    planned.push({ mount: rel, object: info.name, info });
  }
  if (!resolve) return planned;
  // Restore each object to its mount as saved (metadata). Without metadata (the Go plugin's objects) go where
  // the Go plugin would: absolute-name archives to the object path taken as absolute, relative-name archives
  // (saved from `./` mounts) to that path under the working directory.
  return await mapBounded(planned, 8, async (p): Promise<Planned> => {
    const info = p.info?.meta[META.mount] ? p.info : (await ctx.backend.stat(p.object)) ?? p.info;
    const recorded = info?.meta[META.mount];
    if (recorded) {
      // Metadata is as untrusted as the archive: the same path rule before it chooses a target.
      if (cleanPath(recorded) === null) {
        return {
          ...p,
          info,
          listed: true,
          refused: `its ${META.mount} metadata ${JSON.stringify(recorded)} has a ".." segment`,
        };
      }
      return { ...p, info, listed: true, mount: recorded };
    }
    return {
      ...p,
      info,
      listed: true,
      mount: (await hasAbsoluteNames(ctx, p.object)) ? `/${p.mount}` : p.mount,
    };
  });
}

/**
 * Whether an archive's entry names are absolute, from its first entry's full
 * name (USTAR prefix + name, PAX `path`, GNU long name: read by our tar
 * reader, with its limits), decompressed from the first bytes of the object;
 * the rest is not downloaded.
 */
async function hasAbsoluteNames(ctx: OpContext, object: string): Promise<boolean> {
  const { TarReader, decompressStream } = await archiveModules();
  const tar = new TarReader(
    (await ctx.backend.get(object)).pipeThrough(decompressStream().stream).getReader(),
  );
  try {
    const first = await tar.next();
    return first?.name.startsWith("/") ?? false;
  } catch {
    return false; // a corrupt or unreadable archive: the restore itself reports it
  } finally {
    await tar.cancel();
  }
}

/**
 * The archive modules (decompression with node:zlib, the tar reader, the
 * extractor), loaded when an object is found: a miss never loads them.
 */
async function archiveModules() {
  const [compression, unpack, tar] = await Promise.all([
    import("../archive/compression.ts"),
    import("../archive/unpack.ts"),
    import("../archive/tar.ts"),
  ]);
  return {
    decompressStream: compression.decompressStream,
    unpackToMount: unpack.unpackToMount,
    TarReader: tar.TarReader,
  };
}

/** The mount path part of a listed object name: after `<prefix>/`, or after the first segment past the prefix. */
function relativeMount(name: string, prefix: string): string | undefined {
  const rest = name.slice(prefix.length);
  const rel = rest.startsWith("/") ? rest.slice(1) : rest.slice(rest.indexOf("/") + 1);
  return rest.includes("/") && rel !== "" ? rel : undefined;
}

/** The newest cache under one restore-keys prefix, or undefined. */
async function planFallback(
  ctx: OpContext,
  mounts: readonly string[],
  restoreKey: string,
  resolve: boolean,
): Promise<{ key: string; plan: Planned[] } | undefined> {
  const root = ctx.settings.remoteRoot === "" ? "" : `${keyPrefix("", ctx.settings.remoteRoot)}/`;
  const cleanKey = restoreKey.replace(/^(\.\/|\/)+/, "");
  if (cleanKey.split("/").includes("..")) return undefined;
  const prefix = root + cleanKey;
  const groups = new Map<string, { newest: number; entries: ObjectInfo[] }>();
  const mountPaths = mounts.filter((m) => !isGlobMount(m)).map((m) =>
    mountObjectPath(expandMount(m, ctx.env), ctx.env)
  );
  const globs = mounts.filter(isGlobMount).map((g) => globObjectMatcher(g, ctx.env));
  for await (const info of ctx.backend.list(prefix)) {
    let key: string | undefined;
    if (mounts.length > 0) {
      const mp = mountPaths.find((p) =>
        info.name.endsWith(`/${p}`) && info.name.length - p.length - 1 >= prefix.length
      );
      if (mp) key = info.name.slice(root.length, info.name.length - mp.length - 1);
      else if (globs.length > 0) key = globKeyOf(info.name, root, prefix, globs);
    } else {
      const slash = info.name.indexOf("/", Math.max(prefix.length, root.length + 1));
      if (slash > 0) key = info.name.slice(root.length, slash);
    }
    if (key === undefined || key === "") continue;
    const group = groups.get(key) ?? { newest: 0, entries: [] };
    group.entries.push(info);
    group.newest = Math.max(group.newest, info.modified.getTime());
    groups.set(key, group);
  }
  let best: [string, { newest: number; entries: ObjectInfo[] }] | undefined;
  for (const entry of groups) if (!best || entry[1].newest > best[1].newest) best = entry;
  if (!best) return undefined;
  const [key] = best;
  const sub: OpContext = { ...ctx, key };
  const plan = await planExact(sub, mounts, resolve);
  return plan.length > 0 ? { key, plan } : undefined;
}

/** The shortest key (after `root`, at least `prefix` long) under which the rest of `name` matches a glob. */
function globKeyOf(
  name: string,
  root: string,
  prefix: string,
  globs: readonly { match: (p: string) => boolean }[],
): string | undefined {
  for (
    let s = name.indexOf("/", Math.max(prefix.length, root.length + 1));
    s > 0;
    s = name.indexOf("/", s + 1)
  ) {
    const rel = name.slice(s + 1);
    if (globs.some((g) => g.match(rel))) return name.slice(root.length, s);
  }
  return undefined;
}

async function restoreOne(ctx: OpContext, p: Planned): Promise<MountOutcome> {
  const { log, settings } = ctx;
  const started = performance.now();
  const base: MountOutcome = { mount: p.mount, object: p.object, status: "failed" };
  const refusal = p.listed
    ? p.refused ?? confineListingTarget(ctx, expandMount(p.mount, ctx.env))
    : undefined;
  if (refusal !== undefined) {
    const outcome: MountOutcome = { ...base, status: "skipped", reason: refusal };
    log.warn("restore: skipping an object that would restore outside the allowed directories", {
      object: p.object,
      target: p.mount,
      reason: refusal,
      setting: "PLUGIN_RESTORE_ALLOWED_PATHS (--restore-allowed-paths) allows more directories",
    });
    logOutcome(log, "restore", outcome);
    return outcome;
  }
  let outcome: MountOutcome;
  try {
    // Stale staging directories of killed restores are swept by the extraction itself (unpack.ts).
    const [body, { decompressStream, unpackToMount }] = await Promise.all([
      ctx.backend.get(p.object, { signal: cancelSignal() }),
      archiveModules(),
    ]);
    const meter = new ProgressMeter(
      log,
      "download",
      { mount: p.mount, object: p.object },
      undefined,
      p.info?.size,
    );
    const decoder = decompressStream();
    try {
      const result = await unpackToMount(body.pipeThrough(meter.stream()).pipeThrough(decoder.stream), {
        mount: expandMount(p.mount, ctx.env),
        cwd: ctx.cwd,
        preserveMetadata: settings.preserveMetadata,
        savedRoot: p.info?.meta[META.root],
        log,
      });
      outcome = {
        ...base,
        status: "restored",
        rawBytes: result.bytes,
        storedBytes: meter.bytes,
        files: result.files,
        seconds: (performance.now() - started) / 1000,
        target: result.target,
        verified: result.verified,
      };
    } finally {
      meter.stop();
    }
  } catch (err) {
    if (isStorageError(err, "NotFound")) {
      outcome = { ...base, status: "miss", reason: "object not found" };
    } else if (err instanceof CorruptArchiveError) {
      // A damaged cache is a failure: the mount is unchanged (staged, verified first), the step says so.
      outcome = {
        ...base,
        status: "failed",
        reason: `corrupt cache, mount left unchanged: ${reasonOf(err)}`,
      };
    } else if (err instanceof UnsafeArchiveError) {
      outcome = {
        ...base,
        status: "failed",
        reason: `unsafe archive refused, mount left unchanged: ${reasonOf(err)}`,
      };
    } else {
      outcome = { ...base, status: "failed", reason: reasonOf(err) };
    }
  }
  logOutcome(log, "restore", outcome);
  return outcome;
}

/** Appends `{cache_size_bytes, dst_path}` per restored mount to the metrics file (A§2.9). */
async function writeMetrics(ctx: OpContext, outcomes: readonly MountOutcome[]): Promise<void> {
  const file = ctx.settings.metricsFile;
  const restored = outcomes.filter((o) => o.status === "restored");
  if (!file || restored.length === 0) return;
  try {
    await Deno.mkdir(dirname(file), { recursive: true });
    let entries: unknown[] = [];
    const existing = await Deno.readTextFile(file).catch(() => "");
    if (existing.trim() !== "") {
      const parsed = JSON.parse(existing);
      if (!Array.isArray(parsed)) throw new Error(`${file} does not hold a JSON array`);
      entries = parsed;
    }
    for (const o of restored) {
      const entry: Record<string, unknown> = {};
      if (o.rawBytes) entry.cache_size_bytes = o.rawBytes;
      if (o.mount) entry.dst_path = o.mount;
      entries.push(entry);
    }
    await Deno.writeTextFile(file, JSON.stringify(entries, null, "\t"), { mode: 0o644 });
    ctx.log.info("updated cache metrics", { file });
  } catch (err) {
    ctx.log.error("could not write the metrics file", { file, error: reasonOf(err) });
  }
}
