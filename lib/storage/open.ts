/**
 * Opens the backend the settings select. Backend modules are loaded on
 * demand, so a filesystem run never loads the cloud SDKs.
 *
 * @module
 */
import type { Backend } from "./backend.ts";
import type { Logger } from "../log.ts";
import { type Settings, SettingsError } from "../settings.ts";

/**
 * Creates the backend for `settings.backend`, logging which one (and which
 * authentication method) is used. Throws {@link SettingsError} for a backend
 * that does not exist yet, and the backend's own typed errors otherwise.
 *
 * @example
 * ```ts
 * const backend = await openBackend(settings, log);
 * ```
 */
export async function openBackend(settings: Settings, log: Logger): Promise<Backend> {
  switch (settings.backend) {
    case "filesystem":
      return (await import("./filesystem/backend.ts")).createFilesystemBackend(settings, log);
    case "azure":
      return (await import("./azure/open.ts")).createAzureBackend(settings, log);
    case "s3":
      return (await import("./s3/open.ts")).createS3Backend(settings, log);
    case "gcs":
      return (await import("./gcs/backend.ts")).createGcsBackend(settings, log);
    case "sftp": {
      // The TCP connection first: its handshake and the server's banner overlap the SSH client's loading.
      const early = await (await import("./sftp/preconnect.ts")).preconnect(settings);
      return (await import("./sftp/backend.ts")).createSftpBackend(settings, log, early);
    }
    case "harness":
      return (await import("./harness/backend.ts")).createHarnessBackend(settings, log);
    default:
      throw new SettingsError(`unknown backend "${settings.backend}"`);
  }
}
