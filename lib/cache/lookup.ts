/**
 * Lookup only (`PLUGIN_LOOKUP_ONLY`, `--lookup-only`, as `lookup-only` of
 * actions/cache): a restore that only finds out whether the key, or a
 * restore-keys fallback, has a cache, writes `cache_hit` and
 * `cache_key_matched` to `$DRONE_OUTPUT`, and downloads nothing. It plans
 * exactly as restore does (restore.ts) without inspecting listed objects:
 * one metadata call per literal mount, one listing per glob mount or
 * listing restore.
 *
 * @module
 */
import { writeStepOutputs } from "./outcome.ts";
import { findCache, type RestoreResult, targetsOf } from "./restore.ts";
import type { OpContext } from "./save.ts";

/** What {@link lookupCache} found. */
export interface LookupResult {
  match: RestoreResult["match"];
  matchedKey?: string;
  /** Objects found, per configured mount (listing mode: every object under the key). */
  found: { mount: string; object?: string }[];
  /** Every configured mount has a cache under the exact key. */
  hit: boolean;
}

/**
 * Looks the cache up and writes the step outputs.
 *
 * @example
 * ```ts
 * const r = await lookupCache(ctx, ["node_modules"], []);
 * if (!r.hit) console.log("build needed");
 * ```
 */
export async function lookupCache(
  ctx: OpContext,
  mounts: readonly string[],
  restoreKeys: readonly string[],
): Promise<LookupResult> {
  const { match, matchedKey, plan } = await findCache(ctx, mounts, restoreKeys, false);
  const found = mounts.length > 0
    ? targetsOf(mounts, plan).map(({ mount, p }) => ({ mount, object: p?.object }))
    : plan.map((p) => ({ mount: p.mount, object: p.object }));
  const complete = found.length > 0 && found.every((f) => f.object !== undefined);
  const result: LookupResult = {
    match,
    matchedKey: match === "miss" ? undefined : matchedKey,
    found,
    hit: match === "exact" && complete,
  };
  const state = complete ? "complete" : found.some((f) => f.object !== undefined) ? "partial" : "miss";
  await writeStepOutputs(ctx.env, ctx.log, {
    hit: result.hit,
    state,
    matchedKey: result.matchedKey ?? "",
    primaryKey: ctx.key,
  });
  return result;
}
