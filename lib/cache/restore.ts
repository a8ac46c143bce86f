/**
 * Restore: find the objects to restore (the exact key, else the newest cache
 * under the first matching `restore-keys` prefix), then for each one stream
 * download → decompress → safe extraction. Explicit mounts fetch
 * `<key>/<mount>` directly; no mounts lists under the key with the Go
 * plugin's strict matching (A§2.6.2). Writes `cache_hit`, `cache_state` and
 * `cache_key_matched` to `$DRONE_OUTPUT` and the metrics file (A§2.9).
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { decompressStream } from "../archive/compression.ts";
import { CorruptArchiveError, unpackToMount, UnsafeArchiveError } from "../archive/unpack.ts";
import { isStorageError, type ObjectInfo } from "../storage/backend.ts";
import { ProgressMeter } from "../log.ts";
import { expandMount, keyPrefix, META, mountObjectPath, objectName } from "./layout.ts";
import { logOutcome, mapBounded, type MountOutcome, reasonOf } from "./outcome.ts";
import { MOUNT_CONCURRENCY, type OpContext } from "./save.ts";
import { cancelSignal, sweepStaleStaging } from "./cleanup.ts";

/** One object chosen for restore, and where it goes. */
interface Planned {
  mount: string;
  object: string;
  info?: ObjectInfo;
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
 * the step outputs and metrics file.
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
  let match: RestoreResult["match"] = "exact";
  let matchedKey = ctx.key;
  let plan = await planExact(ctx, mounts);
  if (plan.length === 0) {
    match = "miss";
    for (const prefix of restoreKeys) {
      const found = await planFallback(ctx, mounts, prefix);
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
    const targets = mounts.length > 0 ? mounts.map((mount) => plan.find((p) => p.mount === mount)) : plan;
    outcomes = await mapBounded([...targets.entries()], MOUNT_CONCURRENCY, async ([i, p]) => {
      if (p) return await restoreOne(ctx, p);
      const missing: MountOutcome = {
        mount: mounts[i],
        object: safeObjectName(ctx, mounts[i]),
        status: "miss",
        reason: `no object for this mount under key ${matchedKey}`,
      };
      logOutcome(ctx.log, "restore", missing);
      return missing;
    });
  }
  const result: RestoreResult = { match, matchedKey: match === "miss" ? undefined : matchedKey, outcomes };
  await writeOutputs(ctx, result);
  await writeMetrics(ctx, outcomes);
  return result;
}

function safeObjectName(ctx: OpContext, mount: string): string {
  try {
    return objectName(ctx.settings.remoteRoot, ctx.key, expandMount(mount, ctx.env), ctx.env);
  } catch {
    return "";
  }
}

/** Explicit mounts: stat `<key>/<mount>` for each. No mounts: list under the key. */
async function planExact(ctx: OpContext, mounts: readonly string[]): Promise<Planned[]> {
  if (mounts.length > 0) {
    const planned = await mapBounded(mounts, 8, async (mount): Promise<Planned | undefined> => {
      const object = objectName(ctx.settings.remoteRoot, ctx.key, expandMount(mount, ctx.env), ctx.env);
      const info = await ctx.backend.stat(object);
      return info ? { mount, object, info } : undefined;
    });
    return planned.filter((p): p is Planned => p !== undefined);
  }
  return await planListing(ctx, keyPrefix(ctx.settings.remoteRoot, ctx.key));
}

/**
 * Listing mode (A§2.6.2). With strict matching (the default) only objects
 * under `<key>/` count, so key `abc` never restores `abc1/…`; without it,
 * everything the plain prefix listing returns counts, and the first path
 * segment after the prefix is taken as the key's.
 */
async function planListing(ctx: OpContext, prefix: string): Promise<Planned[]> {
  const { strictKeyMatching, enableCacheKeySeparator } = ctx.settings;
  const listPrefix = enableCacheKeySeparator || strictKeyMatching ? `${prefix}/` : prefix;
  const planned: Planned[] = [];
  for await (const info of ctx.backend.list(listPrefix)) {
    const rel = relativeMount(info.name, prefix);
    if (rel === undefined || (strictKeyMatching && !info.name.startsWith(`${prefix}/`))) continue;
    planned.push({ mount: rel, object: info.name, info });
  }
  // Restore each object to its mount as saved (metadata). Without metadata (the Go plugin's objects) go where
  // the Go plugin would: absolute-name archives to the object path taken as absolute, relative-name archives
  // (saved from `./` mounts) to that path under the working directory.
  return await mapBounded(planned, 8, async (p) => {
    const info = p.info?.meta[META.mount] ? p.info : (await ctx.backend.stat(p.object)) ?? p.info;
    if (info?.meta[META.mount]) return { ...p, info, mount: info.meta[META.mount] };
    return { ...p, info, mount: (await hasAbsoluteNames(ctx, p.object)) ? `/${p.mount}` : p.mount };
  });
}

/**
 * Whether an archive's entry names are absolute, from its first tar header (read from the first bytes of the
 * object; the rest is not downloaded). A GNU `././@LongLink` header carries the real name in its data block.
 */
async function hasAbsoluteNames(ctx: OpContext, object: string): Promise<boolean> {
  const reader = (await ctx.backend.get(object)).pipeThrough(decompressStream().stream).getReader();
  let head = new Uint8Array(0);
  try {
    while (head.length < 2 * 512) {
      const { value, done } = await reader.read();
      if (done) break;
      const next = new Uint8Array(head.length + value.length);
      next.set(head);
      next.set(value, head.length);
      head = next;
    }
  } catch {
    // A corrupt or unreadable archive: the restore itself reports it.
  } finally {
    await reader.cancel().catch(() => {});
  }
  const longLink = new TextDecoder().decode(head.subarray(0, 13)) === "././@LongLink";
  return head[longLink ? 512 : 0] === 0x2f; // "/"
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
): Promise<{ key: string; plan: Planned[] } | undefined> {
  const root = ctx.settings.remoteRoot === "" ? "" : `${keyPrefix("", ctx.settings.remoteRoot)}/`;
  const cleanKey = restoreKey.replace(/^(\.\/|\/)+/, "");
  if (cleanKey.split("/").includes("..")) return undefined;
  const prefix = root + cleanKey;
  const groups = new Map<string, { newest: number; entries: ObjectInfo[] }>();
  const mountPaths = mounts.map((m) => mountObjectPath(expandMount(m, ctx.env), ctx.env));
  for await (const info of ctx.backend.list(prefix)) {
    let key: string | undefined;
    if (mountPaths.length > 0) {
      const mp = mountPaths.find((p) =>
        info.name.endsWith(`/${p}`) && info.name.length - p.length - 1 >= prefix.length
      );
      if (mp) key = info.name.slice(root.length, info.name.length - mp.length - 1);
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
  const plan = await planExact(sub, mounts);
  return plan.length > 0 ? { key, plan } : undefined;
}

async function restoreOne(ctx: OpContext, p: Planned): Promise<MountOutcome> {
  const { log, settings } = ctx;
  const started = performance.now();
  const base: MountOutcome = { mount: p.mount, object: p.object, status: "failed" };
  let outcome: MountOutcome;
  try {
    await sweepStaleStaging(resolve(ctx.cwd, expandMount(p.mount, ctx.env)), log);
    const body = await ctx.backend.get(p.object, { signal: cancelSignal() });
    const meter = new ProgressMeter(log, "download", { mount: p.mount, object: p.object });
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
      outcome = { ...base, status: "miss", reason: `corrupt cache, ignored: ${reasonOf(err)}` };
    } else if (err instanceof UnsafeArchiveError) {
      outcome = { ...base, status: "failed", reason: `unsafe archive refused: ${reasonOf(err)}` };
    } else {
      outcome = { ...base, status: "failed", reason: reasonOf(err) };
    }
  }
  logOutcome(log, "restore", outcome);
  return outcome;
}

/** Appends `cache_hit`, `cache_state` and `cache_key_matched` to `$DRONE_OUTPUT` (all backends). */
async function writeOutputs(ctx: OpContext, r: RestoreResult): Promise<void> {
  const file = ctx.env.DRONE_OUTPUT;
  if (!file) return;
  const restored = r.outcomes.filter((o) => o.status === "restored").length;
  const lines = [`cache_hit=${r.match === "exact" && restored > 0 && restored === r.outcomes.length}`];
  if (restored > 0) lines.push(`cache_state=${restored === r.outcomes.length ? "complete" : "partial"}`);
  if (restored > 0 && r.matchedKey) lines.push(`cache_key_matched=${r.matchedKey}`);
  try {
    await Deno.writeTextFile(file, lines.join("\n") + "\n", { append: true, create: true, mode: 0o644 });
  } catch (err) {
    ctx.log.error("could not write step outputs", { file, error: reasonOf(err) });
  }
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
