/**
 * ci-cache: save and restore CI build caches to object storage.
 *
 * Entry point: `run(args, env)` returns the exit code; nothing else happens
 * here.
 *
 * @module
 */
import { run } from "./lib/cli.ts";

export { run };

if (import.meta.main) {
  Deno.exit(await run(Deno.args, Deno.env.toObject()));
}
