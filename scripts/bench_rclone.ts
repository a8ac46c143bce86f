/**
 * The bench's independent reference: rclone (Debian's, a tuned Go transfer
 * client) configured against the same test server ci-cache talks to, so a
 * row can read "ours / (`tar | zstd -T0 | rclone rcat`)" and the reverse
 * (`rclone cat | zstd -d | tar -x`). rclone is configured through
 * `RCLONE_CONFIG_BENCH_*` environment variables (no config file), with the
 * same part size and parallelism ci-cache uses (16 MiB × 4).
 *
 * @module
 */

/** How to reach one backend's test server with rclone. */
export interface RcloneRemote {
  /** Environment that defines the `bench:` remote. */
  env: Record<string, string>;
  /** The rclone path of an object (`bench:<bucket>/<name>`). */
  path(object: string): string;
}

/** True when `rclone` is on the PATH (`scripts/install/rclone.sh` installs it). */
export async function rcloneInstalled(): Promise<boolean> {
  try {
    return (await new Deno.Command("rclone", { args: ["version"], stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

/**
 * The rclone remote for a backend's test server, from the environment the
 * server hands ci-cache; `undefined` where rclone has no way in (filesystem:
 * the pipeline writes straight into the volume).
 *
 * @example
 * ```ts
 * const remote = rcloneRemote("s3", swift.env);
 * // tar -cf - cache | zstd -T0 -3 | rclone rcat ${remote.path("k/cache")}
 * ```
 */
export function rcloneRemote(backend: string, env: Record<string, string>): RcloneRemote | undefined {
  // AWS_CA_BUNDLE (set on some machines) makes rclone's S3 client refuse its own transport; plain http here.
  const common = { RCLONE_CONFIG_BENCH_NO_CHECK_BUCKET: "true", AWS_CA_BUNDLE: "" };
  switch (backend) {
    case "s3":
      return {
        env: {
          ...common,
          RCLONE_CONFIG_BENCH_TYPE: "s3",
          RCLONE_CONFIG_BENCH_PROVIDER: "Other",
          RCLONE_CONFIG_BENCH_ENDPOINT: env.PLUGIN_ENDPOINT,
          RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: env.PLUGIN_ACCESS_KEY,
          RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: env.PLUGIN_SECRET_KEY,
          RCLONE_CONFIG_BENCH_REGION: env.PLUGIN_REGION ?? "us-east-1",
          RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE: "true",
          RCLONE_CONFIG_BENCH_CHUNK_SIZE: "16Mi",
          RCLONE_CONFIG_BENCH_UPLOAD_CONCURRENCY: "4",
        },
        path: (object) => `bench:${env.PLUGIN_BUCKET}/${object}`,
      };
    case "azure":
      return {
        env: {
          ...common,
          RCLONE_CONFIG_BENCH_TYPE: "azureblob",
          RCLONE_CONFIG_BENCH_USE_EMULATOR: "true",
          RCLONE_CONFIG_BENCH_ENDPOINT: env.PLUGIN_ENDPOINT,
          RCLONE_CONFIG_BENCH_ACCOUNT: env.PLUGIN_ACCOUNT_NAME,
          RCLONE_CONFIG_BENCH_KEY: env.PLUGIN_ACCOUNT_KEY,
          RCLONE_CONFIG_BENCH_CHUNK_SIZE: "16Mi",
          RCLONE_CONFIG_BENCH_UPLOAD_CONCURRENCY: "4",
        },
        path: (object) => `bench:${env.PLUGIN_CONTAINER}/${object}`,
      };
    // gcs: the firebase emulator answers rclone's resumable upload (Go's `X-Guploader-No-308` variant) with a
    // plain "OK" body that rclone cannot parse, so GCS rows have no rclone reference here.
    default:
      return undefined;
  }
}
