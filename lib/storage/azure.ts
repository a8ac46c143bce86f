/**
 * Azure backend: not built yet (placeholder until its issue lands).
 *
 * @module
 */
import type { Backend } from "./backend.ts";
import type { Logger } from "../log.ts";
import { type Settings, SettingsError } from "../settings.ts";

/** Creates the azure backend. Not available yet: always throws a settings error. */
export function createAzureBackend(_settings: Settings, _log: Logger): Promise<Backend> {
  return Promise.reject(new SettingsError('backend "azure" is not available yet in ci-cache: use filesystem'));
}
