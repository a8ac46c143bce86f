/**
 * Starts the GCS test server: firebase-tools' Cloud Storage emulator (the GCS JSON API) on a free port of
 * 127.0.0.1, run by Node through `scripts/servers/gcs_emulator.mjs` (see there for what the launcher adds).
 * Installs the emulator first when it is missing (`scripts/install/gcs-emulator.sh`, into `.servers/firebase`).
 *
 * Used by the tests, the bench and the end-to-end tests; runnable alone:
 * `deno run -A scripts/servers/gcs.ts` prints the environment for the ci-cache CLI and waits for Ctrl-C.
 *
 * @module
 */
import { ensureInstalled } from "../install/ensure.ts";
import { watchdog } from "./watchdog.ts";

/** Options for {@link startGcs}. */
export interface StartGcsOptions {
  /** Bucket named in the returned environment (the emulator creates buckets on first use). */
  bucket?: string;
  /** Test hooks of the launcher: only these buckets exist. */
  buckets?: string[];
  /** Test hooks of the launcher: bearer tokens answered with GCS's 401 or 403 error. */
  deny?: Record<string, 401 | 403>;
}

/** One request the emulator saw. */
export interface SeenByEmulator {
  method: string;
  path: string;
  query: Record<string, string>;
  authorization: string;
  apiKey: string;
  /** `x-goog-encryption-key-sha256` (customer-supplied key hash), or "". */
  encryptionKeySha256: string;
}

/** A running emulator. */
export interface GcsServer {
  /** Environment with which the ci-cache CLI uses it (PLUGIN_BACKEND, PLUGIN_ENDPOINT, PLUGIN_BUCKET). */
  env: Record<string, string>;
  /** The API root, e.g. `http://127.0.0.1:9199`. */
  endpoint: string;
  /** Requests the emulator saw (method, path, authorization, apiKey), from the launcher's log. */
  requests(): Promise<SeenByEmulator[]>;
  stop: () => Promise<void>;
}

const root = new URL("../../", import.meta.url).pathname;

/**
 * Starts the emulator and waits until it answers.
 *
 * @example
 * ```ts
 * const gcs = await startGcs();
 * // run ci-cache with gcs.env …
 * await gcs.stop();
 * ```
 */
export async function startGcs(options: StartGcsOptions = {}): Promise<GcsServer> {
  await ensureInstalled("gcs-emulator");
  const tmp = await Deno.makeTempDir({ prefix: "ci-cache-gcs-" });
  const child = new Deno.Command("node", {
    args: [`${root}scripts/servers/gcs_emulator.mjs`],
    env: {
      TMPDIR: tmp,
      GCS_EMULATOR_CONFIG: JSON.stringify({ buckets: options.buckets, deny: options.deny }),
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  watchdog(child.pid, tmp);
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    first += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  let port: number;
  try {
    port = JSON.parse(first.split("\n")[0]).port;
  } catch {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    throw new Error(`the GCS emulator did not start: ${(await stderr).trim().slice(-2000)}`);
  }
  const endpoint = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`${endpoint}/_test/requests`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  let stopped = false;
  return {
    endpoint,
    env: {
      PLUGIN_BACKEND: "gcs",
      PLUGIN_ENDPOINT: endpoint,
      PLUGIN_BUCKET: options.bucket ?? "ci-cache",
    },
    requests: async () => await (await fetch(`${endpoint}/_test/requests`)).json(),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 5000);
      await child.status;
      clearTimeout(timer);
      await stderr;
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
}

if (import.meta.main) {
  const gcs = await startGcs();
  for (const [k, v] of Object.entries(gcs.env)) console.log(`${k}=${v}`);
  console.log("Ctrl-C to stop");
  Deno.addSignalListener("SIGINT", async () => {
    await gcs.stop();
    Deno.exit(0);
  });
}
