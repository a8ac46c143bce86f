/**
 * The ci-cache version (kept equal to `deno.json`'s by a test).
 *
 * @module
 */

/** The version `--version` prints and archives record. */
export const VERSION = "0.1.0";
