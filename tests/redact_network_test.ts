/**
 * No credential in any output when the network fails, on every object store:
 * the CLI runs as a subprocess (`deno run main.ts`, debug on) against
 * Azurite, Swift's s3api and the GCS emulator through a small TCP proxy that
 * cuts the connection when it sees a ranged download or an upload part, and
 * against an endpoint whose name does not resolve. Its stdout, stderr,
 * `DRONE_OUTPUT` and metrics file must hold no key, token, signature or SAS.
 *
 * The proxy is local to this file on purpose: it closes both sockets the
 * moment the request line of a matching request passes, so the client sees
 * the connection drop before any answer (the case where Deno's `fetch`
 * error carries the full request URL, with its signature).
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { seededBytes } from "./backend_conformance.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";
import { startSwift } from "../scripts/servers/swift.ts";
import { startGcs } from "../scripts/servers/gcs.ts";

const OPTS = { sanitizeOps: false, sanitizeResources: false };
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;

/** Patterns of a credential that escaped masking, whatever its value. */
const LEAKS = [
  /[?&\s]sig=(?!\*\*\*)[^&\s"]/i,
  /X-(Amz|Goog)-(Signature|Credential|Security-Token)=(?!\*\*\*)/i,
  /Bearer (?!\*\*\*)[A-Za-z0-9]/,
  /Signature=(?!\*\*\*)[0-9a-f]{8}/i,
  /upload_id=(?!\*\*\*)[A-Za-z0-9]/,
];

/** A TCP proxy that drops a connection when a request line matches `cut` (always, or `budget` times). */
function cuttingProxy(targetPort: number, cut: RegExp) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let cuts = 0;
  const handle = async (client: Deno.Conn) => {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
    } catch {
      client.close();
      return;
    }
    conns.add(client);
    conns.add(server);
    const close = () => {
      for (const c of [client, server]) {
        conns.delete(c);
        try {
          c.close();
        } catch { /* already closed */ }
      }
    };
    server.readable.pipeTo(client.writable).catch(() => {}).finally(close);
    const writer = server.writable.getWriter();
    try {
      for await (const chunk of client.readable) {
        const head = new TextDecoder("latin1").decode(chunk.subarray(0, 4096));
        if (cut.test(head)) {
          cuts++;
          close();
          return;
        }
        await writer.write(chunk);
      }
    } catch { /* a side closed */ }
    close();
  };
  (async () => {
    for await (const conn of listener) handle(conn);
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get cuts() {
      return cuts;
    },
    stop: () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
    },
  };
}

interface Outputs {
  code: number;
  text: string;
}

/** Runs the CLI with `env` in a subprocess, returns its exit code and every output it made. */
async function cli(env: Record<string, string>, dir: string): Promise<Outputs> {
  const droneOutput = `${dir}/drone-output-${crypto.randomUUID()}`;
  const metrics = `${dir}/metrics-${crypto.randomUUID()}.json`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    cwd: dir,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? dir,
      DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`,
      NO_COLOR: "1",
      PLUGIN_DEBUG: "true",
      PLUGIN_CACHE_KEY: "leak-test",
      PLUGIN_MOUNT: "cache",
      PLUGIN_BACKEND_OPERATION_TIMEOUT: "20s",
      DRONE_OUTPUT: droneOutput,
      PLUGIN_CACHE_INTEL_METRICS_FILE: metrics,
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const files = await Promise.all([droneOutput, metrics].map((f) => Deno.readTextFile(f).catch(() => "")));
  const dec = new TextDecoder();
  return { code: out.code, text: [dec.decode(out.stdout), dec.decode(out.stderr), ...files].join("\n") };
}

function assertClean(o: Outputs, secrets: string[], what: string): void {
  for (const s of secrets) assert(!o.text.includes(s), `${what}: a secret appears in the output:\n${o.text}`);
  for (const p of LEAKS) assert(!p.test(o.text), `${what}: ${p} matches the output:\n${o.text}`);
}

/** A mount of incompressible data: several parts on upload, several ranges on download. */
async function workdir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ci-cache-leak-" });
  await Deno.mkdir(`${dir}/cache`);
  await Deno.writeFile(`${dir}/cache/blob.bin`, seededBytes(6 * MiB + 4321, 9));
  return dir;
}

/**
 * The three failures for one backend: an upload part cut, a ranged download cut (after a good save),
 * and an endpoint that does not resolve. Each run must have failed where intended and leaked nothing.
 */
async function failuresLeakNothing(
  name: string,
  env: Record<string, string>,
  endpoint: (port: number) => Record<string, string>,
  targetPort: number,
  cuts: { upload: RegExp; range: RegExp },
  secrets: string[],
  rangeMasked?: string,
): Promise<void> {
  const dir = await workdir();
  try {
    const upload = cuttingProxy(targetPort, cuts.upload);
    try {
      const o = await cli({ ...env, ...endpoint(upload.port), PLUGIN_REBUILD: "true" }, dir);
      assert(upload.cuts > 0, `${name}: no upload part was cut:\n${o.text}`);
      assert(
        /save: failed|cache failed|could not/.test(o.text),
        `${name}: the save did not fail:\n${o.text}`,
      );
      assertClean(o, secrets, `${name} upload cut`);
    } finally {
      upload.stop();
    }

    const saved = await cli({ ...env, ...endpoint(targetPort), PLUGIN_REBUILD: "true" }, dir);
    assertEquals(saved.code, 0, saved.text);
    assertClean(saved, secrets, `${name} good save`);
    const range = cuttingProxy(targetPort, cuts.range);
    try {
      await Deno.remove(`${dir}/cache`, { recursive: true });
      const o = await cli({ ...env, ...endpoint(range.port), PLUGIN_RESTORE: "true" }, dir);
      assert(range.cuts > 0, `${name}: no ranged download was cut:\n${o.text}`);
      assert(/restore: failed|cache failed/.test(o.text), `${name}: the restore did not fail:\n${o.text}`);
      assertClean(o, secrets, `${name} range cut`);
      // The failed request's URL did reach the error text, masked: the path this test is about was taken.
      if (rangeMasked) assert(o.text.includes(rangeMasked), `${name}: no ${rangeMasked} in:\n${o.text}`);
    } finally {
      range.stop();
    }

    const dns = endpoint(targetPort);
    for (const [k, v] of Object.entries(dns)) dns[k] = v.replace("127.0.0.1", "ci-cache-nxdomain.invalid");
    for (const mode of ["PLUGIN_REBUILD", "PLUGIN_RESTORE"]) {
      const o = await cli({ ...env, ...dns, [mode]: "true" }, dir);
      assert(
        /resolve|dns|lookup|not found|ENOTFOUND|cannot reach/i.test(o.text),
        `${name}: no DNS failure:\n${o.text}`,
      );
      assertClean(o, secrets, `${name} DNS failure (${mode})`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "redact network: azure (shared key: every request signed with the key, ranges over fetch) leaks nothing",
  ...OPTS,
  async fn() {
    const a = await startAzurite();
    try {
      await failuresLeakNothing(
        "azure",
        { ...a.env, PLUGIN_PART_SIZE_MB: "1", AZURE_BLOB_MAX_RETRY_REQUESTS: "1" },
        (port) => ({ PLUGIN_ENDPOINT: `http://127.0.0.1:${port}/${a.accountName}` }),
        a.port,
        { upload: /^PUT [^ ]*comp=block(&|\s)/m, range: /^GET [^\r\n]*\r\n(?:[^\r\n]+\r\n)*x-ms-range:/i },
        [a.accountKey, encodeURIComponent(a.accountKey)],
      );
    } finally {
      await a.stop();
    }
  },
});

Deno.test({
  name: "redact network: azure with a SAS token leaks nothing",
  ...OPTS,
  async fn() {
    const a = await startAzurite();
    try {
      const { AccountSASPermissions, generateAccountSASQueryParameters, StorageSharedKeyCredential } =
        await import("../lib/deps/azure_storage_blob.ts");
      const sas = generateAccountSASQueryParameters({
        expiresOn: new Date(Date.now() + 3600_000),
        permissions: AccountSASPermissions.parse("racwdl"),
        resourceTypes: "sco",
        services: "b",
      }, new StorageSharedKeyCredential(a.accountName, a.accountKey)).toString();
      const sig = new URLSearchParams(sas).get("sig")!;
      await failuresLeakNothing(
        "azure sas",
        {
          PLUGIN_BACKEND: "azure",
          PLUGIN_CONTAINER: "cicache",
          PLUGIN_SAS_TOKEN: sas,
          PLUGIN_PART_SIZE_MB: "1",
          AZURE_BLOB_MAX_RETRY_REQUESTS: "1",
        },
        (port) => ({ PLUGIN_ENDPOINT: `http://127.0.0.1:${port}/${a.accountName}` }),
        a.port,
        { upload: /^PUT [^ ]*comp=block(&|\s)/m, range: /^GET [^\r\n]*\r\n(?:[^\r\n]*\r\n)*?x-ms-range:/im },
        [sig, encodeURIComponent(sig), sas],
      );
    } finally {
      await a.stop();
    }
  },
});

Deno.test({
  name: "redact network: s3 (Swift s3api) leaks nothing",
  ...OPTS,
  async fn() {
    const swift = await startSwift();
    try {
      await failuresLeakNothing(
        "s3",
        { ...swift.env, PLUGIN_PART_SIZE_MB: "5" },
        (port) => ({ PLUGIN_ENDPOINT: `http://127.0.0.1:${port}` }),
        Number(new URL(swift.env.PLUGIN_ENDPOINT).port),
        { upload: /^PUT [^ ]*partNumber=/m, range: /^GET [^\r\n]*\r\n(?:[^\r\n]*\r\n)*?range: bytes=/im },
        [swift.secretKey],
      );
    } finally {
      await swift.stop();
    }
  },
});

Deno.test({
  name: "redact network: gcs (emulator, API key) leaks nothing",
  ...OPTS,
  async fn() {
    const gcs = await startGcs();
    const apiKey = `AIza-test-${crypto.randomUUID()}`;
    try {
      await failuresLeakNothing(
        "gcs",
        { ...gcs.env, PLUGIN_API_KEY: apiKey, PLUGIN_PART_SIZE_MB: "1" },
        (port) => ({ PLUGIN_ENDPOINT: `http://127.0.0.1:${port}` }),
        Number(new URL(gcs.endpoint).port),
        { upload: /^PUT [^ ]*upload_id=/m, range: /^GET [^\r]*alt=media/m },
        [apiKey],
      );
    } finally {
      await gcs.stop();
    }
  },
});
