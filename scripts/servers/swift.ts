/**
 * Test server for the s3 backend: OpenStack Swift with its s3api middleware
 * (the S3 REST API with SigV4 verification), from Debian's packages, on
 * 127.0.0.1.
 *
 * Everything lives in a fresh temp dir: one-replica rings built with
 * Swift's RingBuilder (as `swift-ring-builder` does), one device (`mount_check = false`; the temp dir's
 * filesystem must support user xattrs, which ext4/xfs/tmpfs do), and the
 * account, container, object and proxy servers run as child processes with
 * `workers = 0`, stopped by PID. Memcache is not needed: the `cache`
 * middleware stays in the pipeline and merely logs that it cannot connect.
 *
 * Users (tempauth; the S3 access key is `account:user`):
 * - `test:tester` / `testing`: account admin, owns the bucket;
 * - `test:reader` / `reading`: same account, no rights on any bucket (for
 *   access-denied tests).
 *
 * Run alone with `deno run -A scripts/servers/swift.ts`: prints the
 * environment for the ci-cache CLI and waits for Ctrl-C.
 *
 * @module
 */
import { CreateBucketCommand, S3Client } from "../../lib/deps/aws_client_s3.ts";
import { ensureInstalled } from "../install/ensure.ts";
import { watchdog } from "./watchdog.ts";

/** The running Swift and how to reach it. */
export interface SwiftServer {
  /** Environment for the ci-cache CLI (`PLUGIN_BACKEND=s3`, endpoint, keys, bucket, region, path style). */
  env: Record<string, string>;
  /** `http://127.0.0.1:<port>`: the S3 endpoint. */
  endpoint: string;
  /** The bucket created at start. */
  bucket: string;
  /** Access/secret key of the bucket owner. */
  accessKey: string;
  secretKey: string;
  /** A user of the same account without any right on the bucket. */
  readerAccessKey: string;
  readerSecretKey: string;
  /** Region the s3api middleware reports. */
  region: string;
  /** The temp dir with configs, rings, data and logs (`*.log`). */
  dir: string;
  /** Stops every Swift process (by PID) and removes the temp dir. */
  stop: () => Promise<void>;
}

/** Options for {@link startSwift}. */
export interface SwiftOptions {
  /** Bucket to create (default `cicache`). */
  bucket?: string;
  /** Keep the temp dir after stop (for debugging). */
  keepDir?: boolean;
}

const SERVERS = ["account", "container", "object", "proxy"] as const;

/** Gets a free TCP port on 127.0.0.1 (bind port 0, read it, release it). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** True when the Debian Swift packages are installed (`scripts/install/swift.sh`). */
export async function swiftInstalled(): Promise<boolean> {
  try {
    await Deno.stat("/usr/bin/swift-proxy-server");
    await Deno.stat("/usr/bin/swift-ring-builder");
    return true;
  } catch {
    return false;
  }
}

/** True when `dir`'s filesystem takes user xattrs, which Swift's object server needs. */
async function xattrSupported(dir: string): Promise<boolean> {
  const probe = `${dir}/.xattr-probe`;
  await Deno.writeTextFile(probe, "");
  const out = await new Deno.Command("/usr/bin/python3", {
    args: ["-c", "import os,sys; os.setxattr(sys.argv[1], 'user.cicache', b'1')", probe],
    stdout: "null",
    stderr: "null",
  }).output();
  await Deno.remove(probe);
  return out.success;
}

/** Where the data dirs go (undefined: the system temp dir), probed once per process (the probe is a Python). */
let dataBase: Promise<string | undefined> | undefined;

/** The system temp dir when it takes user xattrs, else `.servers/swift-tmp` when that does. */
async function probeDataBase(): Promise<string | undefined> {
  const supports = async (base?: string) => {
    const dir = await Deno.makeTempDir({ dir: base, prefix: "cicache-swift-probe-" });
    try {
      return await xattrSupported(dir);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  };
  if (await supports()) return undefined;
  const base = new URL("../../.servers/swift-tmp", import.meta.url).pathname;
  await Deno.mkdir(base, { recursive: true });
  if (await supports(base)) return base;
  throw new Error(
    `neither ${Deno.env.get("TMPDIR") ?? "/tmp"} nor ${base} supports user xattrs, which Swift needs: ` +
      "set TMPDIR to a directory on ext4/xfs/btrfs",
  );
}

/** A fresh dir for configs, rings and data: the system temp dir, else one under `.servers/` (xattrs needed). */
async function makeDataDir(): Promise<string> {
  dataBase ??= probeDataBase();
  return await Deno.makeTempDir({ dir: await dataBase, prefix: "cicache-swift-" });
}

/**
 * Builds the account, container and object rings in `dir`: what `swift-ring-builder <kind>.builder create 4 1
 * 1`, `add r1z1-127.0.0.1:<port>/d1 100` and `rebalance` write (`<kind>.builder`, `<kind>.ring.gz`), in one
 * Python process instead of nine (each one ≈ 1 s of start-up CPU).
 */
async function buildRings(
  dir: string,
  ports: Record<"account" | "container" | "object", number>,
): Promise<void> {
  const script = `
import json, sys
from swift.common.ring import RingBuilder
for kind, port in json.loads(sys.argv[1]).items():
    b = RingBuilder(4, 1, 1)
    b.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "replication_ip": "127.0.0.1",
               "replication_port": port, "device": "d1", "weight": 100.0, "meta": ""})
    b.rebalance()
    b.save(kind + ".builder")
    b.get_ring().save(kind + ".ring.gz")
`;
  await run(["/usr/bin/python3", "-c", script, JSON.stringify(ports)], dir);
}

async function run(cmd: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`${cmd.join(" ")} failed: ${text}`);
  }
}

async function userName(): Promise<string> {
  const out = await new Deno.Command("id", { args: ["-un"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

function serverConf(
  kind: "account" | "container" | "object",
  port: number,
  dir: string,
  user: string,
): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${dir}
devices = ${dir}/devices
mount_check = false
disable_fallocate = true
log_level = WARNING
log_address = ${dir}/no-syslog

[pipeline:main]
pipeline = ${kind}-server

[app:${kind}-server]
use = egg:swift#${kind}
`;
}

function proxyConf(port: number, dir: string, user: string, region: string): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${dir}
log_level = WARNING
log_address = ${dir}/no-syslog

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:s3api]
use = egg:swift#s3api
location = ${region}
max_upload_part_num = 10000

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
user_test_reader = reading

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000

[filter:dlo]
use = egg:swift#dlo
`;
}

const SWIFT_CONF = `[swift-hash]
swift_hash_path_suffix = cicache-test
swift_hash_path_prefix = cicache-test

[storage-policy:0]
name = Policy-0
default = yes
`;

async function waitForTcp(
  port: number,
  proc: Deno.ChildProcess,
  name: string,
  logFile: string,
): Promise<void> {
  let exited = false;
  proc.status.then(() => exited = true);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited) {
      const log = await Deno.readTextFile(logFile).catch(() => "");
      throw new Error(`swift ${name} server exited at start:\n${log.slice(-3000)}`);
    }
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`swift ${name} server did not listen on 127.0.0.1:${port} within 60 s (log: ${logFile})`);
}

/**
 * Starts Swift with s3api on free ports under a new temp dir, creates the
 * bucket, and returns the CLI environment and a `stop` function.
 *
 * @example
 * ```ts
 * const swift = await startSwift();
 * try {
 *   // run ci-cache with swift.env
 * } finally {
 *   await swift.stop();
 * }
 * ```
 */
export async function startSwift(options: SwiftOptions = {}): Promise<SwiftServer> {
  await ensureInstalled("swift");
  if (!(await swiftInstalled())) {
    throw new Error("OpenStack Swift is not installed: run scripts/install/swift.sh");
  }
  const dir = await makeDataDir();
  const region = "us-east-1";
  const bucket = options.bucket ?? "cicache";
  const user = await userName();
  const ports = { account: freePort(), container: freePort(), object: freePort(), proxy: freePort() };
  const procs: Deno.ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs) {
      try {
        p.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    for (const p of procs) {
      const timer = setTimeout(() => {
        try {
          p.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await p.status;
      clearTimeout(timer);
    }
    procs.length = 0;
    if (!options.keepDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await Deno.mkdir(`${dir}/devices/d1`, { recursive: true });
    await Deno.writeTextFile(`${dir}/swift.conf`, SWIFT_CONF);
    for (const kind of ["account", "container", "object"] as const) {
      await Deno.writeTextFile(`${dir}/${kind}-server.conf`, serverConf(kind, ports[kind], dir, user));
    }
    await buildRings(dir, ports);
    await Deno.writeTextFile(`${dir}/proxy-server.conf`, proxyConf(ports.proxy, dir, user, region));
    // The four start at once (each is a Python importing Swift: seconds of CPU) and are awaited together.
    const listening: Promise<void>[] = [];
    for (const kind of SERVERS) {
      const logFile = `${dir}/${kind}.log`;
      const log = await Deno.open(logFile, { create: true, write: true, truncate: true });
      const proc = new Deno.Command(`/usr/bin/swift-${kind}-server`, {
        args: [`${dir}/${kind}-server.conf`],
        cwd: dir,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      procs.push(proc);
      watchdog(proc.pid, options.keepDir ? undefined : dir);
      await Deno.writeTextFile(`${dir}/${kind}.pid`, String(proc.pid));
      // Drain output into the log file so a chatty server never blocks on a full pipe.
      const w1 = log.writable.getWriter();
      const pump = async (s: ReadableStream<Uint8Array>) => {
        for await (const chunk of s) await w1.write(chunk).catch(() => {});
      };
      Promise.all([pump(proc.stdout), pump(proc.stderr)]).finally(() => w1.close().catch(() => {}));
      proc.unref();
      listening.push(waitForTcp(ports[kind], proc, kind, logFile));
    }
    await Promise.all(listening);
    const endpoint = `http://127.0.0.1:${ports.proxy}`;
    await waitForHealth(endpoint);
    await createBucket(endpoint, region, bucket);
    return {
      env: {
        PLUGIN_BACKEND: "s3",
        PLUGIN_ENDPOINT: endpoint,
        PLUGIN_BUCKET: bucket,
        PLUGIN_ACCESS_KEY: "test:tester",
        PLUGIN_SECRET_KEY: "testing",
        PLUGIN_REGION: region,
        PLUGIN_PATH_STYLE: "true",
      },
      endpoint,
      bucket,
      accessKey: "test:tester",
      secretKey: "testing",
      readerAccessKey: "test:reader",
      readerSecretKey: "reading",
      region,
      dir,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function waitForHealth(endpoint: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      const res = await fetch(`${endpoint}/healthcheck`, { signal: AbortSignal.timeout(2000) });
      await res.body?.cancel();
      if (res.ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`swift proxy at ${endpoint} did not become healthy within 30 s`);
}

async function createBucket(endpoint: string, region: string, bucket: string): Promise<void> {
  const client = new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: { accessKeyId: "test:tester", secretAccessKey: "testing" },
  });
  try {
    // The account is auto-created on first use; the backends may need a moment (on a loaded machine, with
    // another test process starting its own Swift, the proxy answered with non-XML errors for over 5 s:
    // CI failure), so retry for up to 30 s.
    const deadline = Date.now() + 30_000;
    for (let attempt = 0;; attempt++) {
      try {
        await client.send(new CreateBucketCommand({ Bucket: bucket }), {
          abortSignal: AbortSignal.timeout(10_000),
        });
        return;
      } catch (err) {
        const name = (err as { name?: string }).name;
        if (name === "BucketAlreadyOwnedByYou" || name === "BucketAlreadyExists") return;
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, Math.min(1000, 250 * (attempt + 1))));
      }
    }
  } finally {
    client.destroy();
  }
}

if (import.meta.main) {
  const swift = await startSwift();
  for (const [k, v] of Object.entries(swift.env)) console.log(`export ${k}=${JSON.stringify(v)}`);
  console.log(`# swift data and logs: ${swift.dir}; Ctrl-C stops it`);
  const done = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", () => done.resolve());
  Deno.addSignalListener("SIGTERM", () => done.resolve());
  await done.promise;
  await swift.stop();
}
