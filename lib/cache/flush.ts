/**
 * Flush: delete the objects under the key (or under `--flush-prefix`),
 * optionally only those older than `--flush-older-than` (TTL eviction), or
 * just list them with `--dry-run`.
 *
 * @module
 */
import { formatBytes } from "../log.ts";
import { keyPrefix } from "./layout.ts";
import { mapBounded, reasonOf } from "./outcome.ts";
import type { OpContext } from "./save.ts";

/** What a flush did. */
export interface FlushResult {
  prefix: string;
  matched: number;
  deleted: number;
  failed: number;
  bytes: number;
}

/**
 * Deletes (or, dry run, lists) the objects under the key or the flush prefix.
 *
 * @example
 * ```ts
 * const r = await flush(ctx); // r.deleted objects removed
 * ```
 */
export async function flush(ctx: OpContext): Promise<FlushResult> {
  const { settings, backend, log } = ctx;
  const prefix = settings.flushPrefix !== ""
    ? keyPrefix(settings.remoteRoot, settings.flushPrefix) + (settings.flushPrefix.endsWith("/") ? "/" : "")
    : `${keyPrefix(settings.remoteRoot, ctx.key)}/`;
  const cutoff = Date.now() - settings.flushOlderThan;
  // Leftovers of killed saves are invisible to list: sweep the stale ones (filesystem and sftp temp files, S3
  // multipart uploads, Azure uncommitted blocks).
  if (!settings.dryRun) {
    await (backend as { sweepStale?: (p: string) => Promise<number> }).sweepStale?.(prefix);
  }
  const victims = [];
  for await (const info of backend.list(prefix)) {
    if (settings.flushOlderThan > 0 && info.modified.getTime() > cutoff) continue;
    victims.push(info);
  }
  const result: FlushResult = { prefix, matched: victims.length, deleted: 0, failed: 0, bytes: 0 };
  if (settings.dryRun) {
    for (const v of victims) {
      log.info("flush (dry run): would delete", {
        object: v.name,
        size: formatBytes(v.size),
        modified: v.modified.toISOString(),
      });
    }
  } else {
    await mapBounded(victims, 8, async (v) => {
      try {
        await backend.delete(v.name);
        result.deleted++;
        result.bytes += v.size;
        log.debug("flush: deleted", { object: v.name });
      } catch (err) {
        result.failed++;
        log.error("flush: could not delete", { object: v.name, error: reasonOf(err) });
      }
    });
  }
  log.info(settings.dryRun ? "flush (dry run) done" : "flush done", {
    prefix,
    matched: result.matched,
    deleted: result.deleted,
    failed: result.failed,
    freed: formatBytes(result.bytes),
    older_than_s: settings.flushOlderThan / 1000,
  });
  return result;
}
