/**
 * Test server for the azure backend: Azurite (Microsoft's Azure Storage
 * emulator, blob service only) on 127.0.0.1, run through Deno's npm support
 * (`npm:azurite@3.37.0/azurite-blob`; `scripts/install/azurite.sh`
 * caches it on first use).
 *
 * Two set-ups:
 * - {@link startAzurite}: plain HTTP, shared-key account `devstoreaccount1`
 *   with its published key (also SAS and connection strings);
 * - {@link startAzuriteOAuth}: HTTPS with `--oauth basic` plus the test-only
 *   Entra token endpoint (`entra.ts`) and a throwaway CA (`tls.ts`), for the
 *   OIDC and service-principal paths. The client must trust the CA through
 *   `NODE_EXTRA_CA_CERTS` (in the returned env), set before its process
 *   starts, so run the CLI in a subprocess with that env.
 *
 * Run alone: `deno run -A scripts/servers/azurite.ts [--oauth]` prints the
 * environment for the ci-cache CLI and waits for Ctrl-C.
 *
 * @module
 */
import { makeTestTls, type TestTls } from "./tls.ts";
import { type EntraServer, startEntra } from "./entra.ts";
import { ensureInstalled } from "../install/ensure.ts";

/** The emulator's published development account (not a secret). */
import { watchdog } from "./watchdog.ts";

export const AZURITE_ACCOUNT = "devstoreaccount1";
/** The emulator's published development key (not a secret). */
export const AZURITE_KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/** The Azurite package Deno runs. */
export const AZURITE_SPECIFIER = "npm:azurite@3.37.0/azurite-blob";

/** Options for {@link startAzurite}. */
export interface AzuriteOptions {
  /** Serve HTTPS with this certificate (required for `oauth`). */
  tls?: Pick<TestTls, "certFile" | "keyFile">;
  /** Accept OAuth bearer tokens (`--oauth basic`; needs `tls`). */
  oauth?: boolean;
  /** Keep blobs on disk in the temp dir instead of in memory (large benchmarks). */
  onDisk?: boolean;
  /** Container name put in the env (default `cicache`; the backend creates it). */
  container?: string;
}

/** A running Azurite. */
export interface AzuriteServer {
  /** Environment for the ci-cache CLI (`PLUGIN_BACKEND=azure`, endpoint, account, key, container). */
  env: Record<string, string>;
  /** Blob service URL of the dev account: `http(s)://127.0.0.1:<port>/devstoreaccount1`. */
  url: string;
  port: number;
  accountName: string;
  accountKey: string;
  /** A connection string for the dev account at this server. */
  connectionString: string;
  /** Temp dir with `azurite.log` (and data with `onDisk`). */
  dir: string;
  /** Stops Azurite (by PID) and removes the temp dir. */
  stop: () => Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function answers(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

async function readLog(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => !/Download|Initialize/.test(l)).join(
      "\n",
    )
      .slice(-2000);
  } catch {
    return "";
  }
}

/**
 * Starts Azurite's blob service on a free port of 127.0.0.1 and waits until
 * it accepts connections.
 *
 * @example
 * ```ts
 * const azurite = await startAzurite();
 * // run the CLI with { ...azurite.env, PLUGIN_REBUILD: "true", … }
 * await azurite.stop();
 * ```
 */
export async function startAzurite(options: AzuriteOptions = {}): Promise<AzuriteServer> {
  if (options.oauth && !options.tls) throw new Error("Azurite OAuth mode needs HTTPS: pass tls");
  await ensureInstalled("azurite");
  const dir = await Deno.makeTempDir({ prefix: "ci-cache-azurite-" });
  let lastError = "";
  for (let attempt = 0; attempt < 4; attempt++) {
    const port = freePort();
    const args = [
      "run",
      "-A",
      "--no-config",
      AZURITE_SPECIFIER,
      "--blobHost",
      "127.0.0.1",
      "--blobPort",
      String(port),
      "--silent",
      "--disableTelemetry",
      "--skipApiVersionCheck",
      "--loose",
      ...(options.onDisk ? ["--location", `${dir}/data`] : ["--inMemoryPersistence"]),
      ...(options.tls ? ["--cert", options.tls.certFile, "--key", options.tls.keyFile] : []),
      ...(options.oauth ? ["--oauth", "basic"] : []),
    ];
    const logPath = `${dir}/azurite.log`;
    const log = await Deno.open(logPath, { create: true, write: true, truncate: true });
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    watchdog(child.pid, dir);
    // Both pipes go to the log file; closing is left to the stream that finishes last.
    const logWriter = log.writable.getWriter();
    const drain = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s) await logWriter.write(chunk).catch(() => {});
    };
    const drained = Promise.all([drain(child.stdout), drain(child.stderr)]).finally(() =>
      logWriter.close().catch(() => {})
    );
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    const deadline = Date.now() + 120_000;
    while (!exited && Date.now() < deadline && !(await answers(port))) {
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!exited && (await answers(port))) {
      const scheme = options.tls ? "https" : "http";
      const url = `${scheme}://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
      const container = options.container ?? "cicache";
      const stop = async () => {
        if (!exited) {
          try {
            Deno.kill(child.pid, "SIGTERM");
          } catch { /* already gone */ }
          const timer = setTimeout(() => {
            try {
              if (!exited) Deno.kill(child.pid, "SIGKILL");
            } catch { /* already gone */ }
          }, 5000);
          await status;
          clearTimeout(timer);
        }
        await drained;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      };
      return {
        env: {
          PLUGIN_BACKEND: "azure",
          PLUGIN_ENDPOINT: url,
          PLUGIN_ACCOUNT_NAME: AZURITE_ACCOUNT,
          PLUGIN_ACCOUNT_KEY: AZURITE_KEY,
          PLUGIN_CONTAINER: container,
        },
        url,
        port,
        accountName: AZURITE_ACCOUNT,
        accountKey: AZURITE_KEY,
        connectionString: `DefaultEndpointsProtocol=${scheme};AccountName=${AZURITE_ACCOUNT};` +
          `AccountKey=${AZURITE_KEY};BlobEndpoint=${url};`,
        dir,
        stop,
      };
    }
    if (!exited) {
      try {
        Deno.kill(child.pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    await status;
    await drained;
    lastError = await readLog(logPath);
    if (!/EADDRINUSE/.test(lastError)) break; // only a lost port race is worth another try
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  throw new Error(
    `Azurite did not start (is it cached? run scripts/install/azurite.sh). Its output:\n${lastError}`,
  );
}

/** Azurite in OAuth mode with its token endpoint and CA. */
export interface AzuriteOAuthServer {
  /**
   * Environment for the CLI with the OIDC (federated token) method:
   * endpoint, account, container, tenant, client id, token, authority host
   * and `NODE_EXTRA_CA_CERTS`.
   */
  env: Record<string, string>;
  azurite: AzuriteServer;
  entra: EntraServer;
  tls: TestTls;
  /** Stops Azurite and the token endpoint and removes the CA. */
  stop: () => Promise<void>;
}

/**
 * Starts Azurite over HTTPS with `--oauth basic`, the test-only Entra
 * endpoint and a fresh CA, and returns the environment with which the CLI
 * authenticates with a federated OIDC token.
 *
 * @example
 * ```ts
 * const s = await startAzuriteOAuth();
 * await new Deno.Command(Deno.execPath(), { args: ["run", "-A", "main.ts", "save"], env: s.env }).output();
 * await s.stop();
 * ```
 */
export async function startAzuriteOAuth(options: { container?: string } = {}): Promise<AzuriteOAuthServer> {
  const tls = await makeTestTls();
  let entra: EntraServer | undefined;
  try {
    entra = await startEntra({ certPem: tls.certPem, keyPem: tls.keyPem });
    const azurite = await startAzurite({ tls, oauth: true, container: options.container });
    const env = {
      PLUGIN_BACKEND: "azure",
      PLUGIN_ENDPOINT: azurite.url,
      PLUGIN_ACCOUNT_NAME: azurite.accountName,
      PLUGIN_CONTAINER: azurite.env.PLUGIN_CONTAINER,
      PLUGIN_AZURE_TENANT_ID: entra.tenantId,
      PLUGIN_AZURE_CLIENT_ID: entra.clientId,
      PLUGIN_AZURE_OIDC_TOKEN: entra.federatedToken,
      AZURE_AUTHORITY_HOST: entra.authorityHost,
      NODE_EXTRA_CA_CERTS: tls.caFile,
    };
    const e = entra;
    return {
      env,
      azurite,
      entra,
      tls,
      stop: async () => {
        await azurite.stop();
        await e.stop();
        await tls.cleanup();
      },
    };
  } catch (err) {
    await entra?.stop();
    await tls.cleanup();
    throw err;
  }
}

if (import.meta.main) {
  const oauth = Deno.args.includes("--oauth");
  const server = oauth ? await startAzuriteOAuth() : await startAzurite();
  const lines = Object.entries(server.env).map(([k, v]) => `export ${k}=${JSON.stringify(v)}`);
  console.log(lines.join("\n"));
  if (oauth) {
    const s = server as AzuriteOAuthServer;
    console.log(`# service principal instead of OIDC: PLUGIN_AZURE_CLIENT_SECRET=${s.entra.clientSecret}`);
  }
  console.log("# Azurite is running; Ctrl-C stops it.");
  const stopped = new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
  await stopped;
  await server.stop();
  Deno.exit(0);
}
