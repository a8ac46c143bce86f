/**
 * Where a listing restore may write. Without mounts, the object chooses its
 * target (its `cicache_mount` metadata, or its absolute entry names, as in
 * the Go plugin), so a poisoned object could aim at any path of a
 * self-hosted runner. Targets must lie under the workspace (the working
 * directory, `HARNESS_WORKSPACE`), `$HOME`, the temp dir, or a directory of
 * the `restore-allowed-paths` setting, both as written and with symlinks
 * resolved. Mounts the user names explicitly are not confined.
 *
 * @module
 */
import { posix } from "node:path";
import { cleanPath, isWithin } from "../archive/paths.ts";
import type { OpContext } from "./save.ts";

/**
 * The directories a listing restore may write into, absolute and clean.
 *
 * @example
 * ```ts
 * allowedRestoreRoots("/harness", { HOME: "/root" }, ["/opt/cache"]); // ["/harness", "/root", "/tmp", "/opt/cache"]
 * ```
 */
export function allowedRestoreRoots(
  cwd: string,
  env: Record<string, string | undefined>,
  extra: readonly string[],
): string[] {
  // The temp dir as Go's os.TempDir finds it: $TMPDIR, else /tmp.
  const candidates = [cwd, env.HARNESS_WORKSPACE, env.HOME, env.TMPDIR || "/tmp", ...extra];
  const out: string[] = [];
  for (const c of candidates) {
    if (!c) continue;
    const clean = cleanPath(posix.resolve(cwd, c));
    if (clean !== null && !out.includes(clean)) out.push(clean);
  }
  return out;
}

/** `path` with the symlinks of its deepest existing ancestor resolved (the rest appended as is). */
function physical(path: string): string {
  let existing = path;
  const rest: string[] = [];
  for (;;) {
    try {
      const real = Deno.realPathSync(existing);
      return rest.length === 0 ? real : posix.join(real, ...rest.reverse());
    } catch {
      if (existing === "/") return path;
      rest.push(posix.basename(existing));
      existing = posix.dirname(existing);
    }
  }
}

/**
 * Why the listing-restore target `mount` (expanded) may not be written, or
 * undefined when it lies under an allowed directory, lexically and with
 * symlinks resolved (a symlink restored earlier must not redirect it).
 *
 * @example
 * ```ts
 * const refusal = confineListingTarget(ctx, "/etc/cron.d");
 * if (refusal) log.warn("skipping", { reason: refusal });
 * ```
 */
export function confineListingTarget(ctx: OpContext, mount: string): string | undefined {
  const allowed = allowedRestoreRoots(ctx.cwd, ctx.env, ctx.settings.restoreAllowedPaths);
  if (cleanPath(mount) === null) return `its target ${JSON.stringify(mount)} has a ".." segment`;
  const target = posix.resolve(ctx.cwd, mount);
  const realAllowed = allowed.map(physical);
  const real = physical(target);
  const ok = allowed.some((dir) => isWithin(target, dir)) && realAllowed.some((dir) => isWithin(real, dir));
  if (ok) return undefined;
  return `its target ${target}${real !== target ? ` (${real})` : ""} is outside the workspace, $HOME and ` +
    `the temp dir (${allowed.join(", ")}): add its directory to PLUGIN_RESTORE_ALLOWED_PATHS ` +
    `(--restore-allowed-paths) to allow it`;
}
