/**
 * The object layout: how a key and a mount become an object name, how mounts
 * are expanded, and the metadata recorded with each object. One place for
 * these facts, compatible with the Go plugin (A§2.3, A§2.4): one object per
 * mount, named `[<remote-root>/]<key>/<mount>` after cleaning, no extension.
 *
 * @module
 */
import { SettingsError } from "../settings.ts";

/** Metadata keys stored with every object (valid on Azure, S3 and GCS). */
export const META = {
  format: "cicache_format",
  version: "cicache_version",
  root: "cicache_root",
  mount: "cicache_mount",
} as const;

/** Version of our archive layout, recorded in metadata and the archive header. */
export const LAYOUT_VERSION = "1";

/**
 * Expands a mount as the Go plugin does: the first `~` becomes `$HOME`, then
 * `$VAR` and `${VAR}` are replaced (undefined variables become empty).
 *
 * @example
 * ```ts
 * expandMount("~/.m2/$SUB", { HOME: "/root", SUB: "repository" }); // "/root/.m2/repository"
 * ```
 */
export function expandMount(mount: string, env: Record<string, string | undefined>): string {
  const withHome = mount.replace("~", "$HOME");
  return withHome.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (_m, braced, bare) => env[braced ?? bare] ?? "",
  );
}

/**
 * The variables a mount refers to (`$VAR`, `${VAR}`, and `HOME` for `~`)
 * that are unset or empty, so `$NOPE_UNSET/.m2` can warn before it silently
 * becomes `/.m2`.
 *
 * @example
 * ```ts
 * unsetMountVariables("$NOPE_UNSET/.m2", {}); // ["NOPE_UNSET"]
 * ```
 */
export function unsetMountVariables(mount: string, env: Record<string, string | undefined>): string[] {
  const withHome = mount.replace("~", "$HOME");
  const names = [...withHome.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g)]
    .map((m) => m[1] ?? m[2]);
  return [...new Set(names)].filter((n) => !env[n]);
}

/**
 * Cleans a slash path like Go's `path.Clean`, but refuses a `..` that would
 * climb above the start (the Go plugin silently escaped the key prefix).
 * Returns the segments.
 */
function cleanSegments(path: string, what: string): string[] {
  const out: string[] = [];
  for (const seg of path.replaceAll("\\", "/").split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length === 0) {
        throw new SettingsError(
          `${what} ${
            JSON.stringify(path)
          } climbs out of its prefix with "..": use a path inside the workspace ` +
            `(or an absolute path) and a key without ".."`,
        );
      }
      out.pop();
      continue;
    }
    out.push(seg);
  }
  return out;
}

/**
 * The mount's part of the object name: `./` and a leading `/` removed, cleaned.
 * With `DRONE_STAGE_TYPE=DOCKER`, a `/tmp/harness/<id>/` prefix becomes
 * `docker/`, as the Go plugin does, so keys stay stable across workspaces.
 *
 * @example
 * ```ts
 * mountObjectPath("/root/.m2/repository", {}); // "root/.m2/repository"
 * mountObjectPath("./node_modules", {}); // "node_modules"
 * ```
 */
export function mountObjectPath(mount: string, env: Record<string, string | undefined>): string {
  let m = mount.replaceAll("\\", "/");
  if (env.DRONE_STAGE_TYPE === "DOCKER") {
    m = m.replace(/^(?:[A-Za-z]:)?\/tmp\/harness\/[^/]+\//, "docker/");
  }
  const segs = cleanSegments(m, "mount");
  if (segs.length === 0) {
    throw new SettingsError(
      `mount ${JSON.stringify(mount)} names no path: give a directory or file to cache`,
    );
  }
  return segs.join("/");
}

/**
 * The object prefix of a key: `[<remote-root>/]<key>` cleaned. Refuses an
 * empty key and `..` escapes.
 */
export function keyPrefix(remoteRoot: string, key: string): string {
  const keySegs = cleanSegments(key, "cache key");
  if (keySegs.length === 0) {
    throw new SettingsError(
      `cache key ${JSON.stringify(key)} is empty after cleaning: flush and restore without mounts need ` +
        "a key: set PLUGIN_CACHE_KEY (or name the mounts to restore)",
    );
  }
  return [...cleanSegments(remoteRoot, "remote root"), ...keySegs].join("/");
}

/**
 * The object name of one mount under a key. A key that renders empty puts
 * the object directly under the mount name (`[<remote-root>/]<mount>`), as
 * the Go plugin does.
 *
 * @example
 * ```ts
 * objectName("", "abc", "node_modules", {}); // "abc/node_modules"
 * objectName("team", "abc", "/root/.m2", {}); // "team/abc/root/.m2"
 * objectName("", "", "node_modules", {}); // "node_modules"
 * ```
 */
export function objectName(
  remoteRoot: string,
  key: string,
  mount: string,
  env: Record<string, string | undefined>,
): string {
  return [
    ...cleanSegments(remoteRoot, "remote root"),
    ...cleanSegments(key, "cache key"),
    mountObjectPath(mount, env),
  ].join("/");
}
