/**
 * Tests of the s3 backend against a real OpenStack Swift with s3api on
 * 127.0.0.1 (scripts/servers/swift.ts), plus a test-only STS speaking the real
 * query/XML protocol (scripts/servers/sts.ts) for the role paths.
 *
 * One Swift serves the whole file (it takes seconds to start); the last test
 * stops it, and an unload handler kills it by PID should a filter skip that.
 *
 * @module
 */
import { backendConformance, readAll, seededBytes, streamOf } from "./backend_conformance.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes, assertThrows } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand } from "../lib/deps/aws_client_s3.ts";
import {
  createS3Backend,
  makeS3Client,
  normalizeEndpoint,
  partSizeFor,
  S3Backend,
} from "../lib/storage/s3/backend.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  type Backend,
  InvalidSettingsError,
  NotFoundError,
  UnavailableError,
} from "../lib/storage/backend.ts";
import { type Settings, SettingsError } from "../lib/settings.ts";
import { FetchS3Backend } from "../lib/storage/s3/fetch_backend.ts";
import { S3Meta } from "../lib/storage/s3/meta.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "../lib/storage/transfer/retry.ts";
import { startEditingProxy, startFaultProxy } from "../scripts/servers/faults.ts";
import { freePort, startSwift, type SwiftServer } from "../scripts/servers/swift.ts";
import { startSts, type StsRole, type StsServer } from "../scripts/servers/sts.ts";

const MiB = 1024 * 1024;
const ROLE = "arn:aws:iam::000000000000:role/ci-cache";
const USER_ROLE = "arn:aws:iam::000000000000:role/ci-cache-user";
const OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-oidc-token-for-ci-cache.sig";

let swiftPromise: Promise<SwiftServer> | undefined;
let swiftDir: string | undefined;
function swift(): Promise<SwiftServer> {
  swiftPromise ??= startSwift().then((s) => {
    swiftDir = s.dir;
    return s;
  });
  return swiftPromise;
}
globalThis.addEventListener("unload", () => {
  // Safety net when a --filter skipped the last test: stop the servers by PID, synchronously.
  if (swiftDir === undefined) return;
  for (const kind of ["proxy", "object", "container", "account"]) {
    try {
      const pid = Number(Deno.readTextFileSync(`${swiftDir}/${kind}.pid`));
      if (pid > 0) Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  try {
    Deno.removeSync(swiftDir, { recursive: true });
  } catch { /* gone */ }
});

function clientFor(s: SwiftServer, accessKeyId = s.accessKey, secretAccessKey = s.secretKey) {
  return makeS3Client({
    region: s.region,
    endpoint: s.endpoint,
    pathStyle: true,
    credentials: () => Promise.resolve({ accessKeyId, secretAccessKey }),
    idleTimeoutMs: 30_000,
    concurrency: 3,
  });
}

function backendFor(s: SwiftServer, extra: Partial<ConstructorParameters<typeof S3Backend>[0]> = {}) {
  return new S3Backend({
    client: clientFor(s),
    bucket: s.bucket,
    endpointLabel: s.endpoint,
    partSize: 5 * MiB,
    concurrency: 3,
    listPageSize: 7,
    ...extra,
  });
}

/** Settings as the CLI would parse them from this environment. */
function settingsOf(env: Record<string, string>): Settings {
  return settingsFrom({
    PLUGIN_PART_SIZE_MB: "5",
    PLUGIN_BACKEND_OPERATION_TIMEOUT: "20s",
    ...env,
  });
}

function text(err: unknown, lines: string[]): string {
  const parts = [String(err), ...lines];
  let cur = err;
  for (let i = 0; i < 5 && cur instanceof Error; i++) {
    parts.push(cur.message);
    cur = cur.cause;
  }
  return parts.join("\n");
}

function assertNoSecret(haystack: string, ...secrets: string[]) {
  for (const s of secrets) assert(!haystack.includes(s), `a secret appears in the output:\n${haystack}`);
}

/** Puts, stats and gets one small object through `backend`. */
async function roundTrip(backend: Backend, name: string) {
  const data = new TextEncoder().encode(`hello ${name}`);
  await backend.put(name, streamOf(data), { cicache_format: "tar" });
  assertEquals((await backend.stat(name))?.meta.cicache_format, "tar");
  assertEquals(new TextDecoder().decode(await readAll(await backend.get(name))), `hello ${name}`);
  await backend.delete(name);
}

async function withSts<T>(roles: StsRole[], fn: (sts: StsServer) => Promise<T>, expirySeconds?: number) {
  const sts = await startSts({ roles, expirySeconds });
  try {
    return await fn(sts);
  } finally {
    await sts.stop();
  }
}

const sdkTest = { sanitizeOps: false, sanitizeResources: false };

Deno.test("s3: partSizeFor grows the part so 10 000 parts cover the maximum size", () => {
  assertEquals(partSizeFor(16 * MiB, 51200 * MiB), 16 * MiB);
  assertEquals(partSizeFor(1 * MiB, 1 * MiB), 5 * MiB);
  assertEquals(partSizeFor(5 * MiB, 100 * 1024 * MiB), 11 * MiB);
  assert(partSizeFor(8 * MiB, 200 * 1024 * MiB) * 10_000 >= 200 * 1024 * MiB);
});

Deno.test("s3: normalizeEndpoint adds https:// to a scheme-less endpoint", () => {
  assertEquals(normalizeEndpoint("minio.example.com:9000"), "https://minio.example.com:9000");
  assertEquals(normalizeEndpoint("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
  assertEquals(normalizeEndpoint(""), "");
});

backendConformance("s3", async () => ({ backend: backendFor(await swift()) }));
// Static keys: every request over fetch with our SigV4 (fetch_backend.ts, no SDK).
backendConformance("s3 (fetch path)", async () => ({
  backend: await createS3Backend(settingsOf((await swift()).env), capture().log, { listPageSize: 7 }),
}));

Deno.test({
  name: "s3: metadata, multipart upload, failed upload leaves no parts, ranged download",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const backend = backendFor(s);
    try {
      const meta = { cicache_format: "zstd", cicache_version: "1", cicache_root: "/tmp/a b/node_modules" };
      const data = seededBytes(11 * MiB + 7, 5);
      await backend.put("meta/obj", streamOf(data, 333_333), meta);
      const info = await backend.stat("meta/obj");
      assertEquals(info?.meta, meta);
      assertEquals(info?.size, data.length);
      const got = await readAll(await backend.get("meta/obj"));
      assertEquals(got.length, data.length);
      assert(got.every((b, i) => b === data[i]), "ranged download differs");
      // A failing stream after two full parts: the multipart upload must be aborted, no parts left.
      let sent = 0;
      const failing = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent++ < 12) c.enqueue(seededBytes(MiB, sent));
          else c.error(new Error("source broke"));
        },
      });
      await assertRejects(() => backend.put("meta/failed", failing, {}));
      const uploads = await backend.client.send(
        new ListMultipartUploadsCommand({ Bucket: s.bucket, Prefix: "meta/" }),
      );
      assertEquals(uploads.Uploads ?? [], []);
      assertEquals(await backend.stat("meta/failed"), null);
      // An aborted multipart upload: same.
      const controller = new AbortController();
      let n = 0;
      const slow = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (n++ === 14) {
            controller.abort(new Error("cancelled"));
            await new Promise((r) => setTimeout(r, 20));
          }
          c.enqueue(seededBytes(MiB, n));
        },
      });
      await assertRejects(() => backend.put("meta/aborted", slow, {}, { signal: controller.signal }));
      const after = await backend.client.send(
        new ListMultipartUploadsCommand({ Bucket: s.bucket, Prefix: "meta/" }),
      );
      assertEquals(after.Uploads ?? [], []);
      assertEquals(await backend.stat("meta/aborted"), null);
      await backend.delete("meta/obj");
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  name: "s3: download reads ranges in order with bounded read-ahead, and cancel stops it",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const backend = backendFor(s, { concurrency: 2 });
    try {
      const data = seededBytes(23 * MiB + 3, 11);
      await backend.put("ranges/obj", streamOf(data, MiB), {});
      // Reading only the first chunk and cancelling must not hang or throw.
      const stream = await backend.get("ranges/obj");
      const reader = stream.getReader();
      const first = await reader.read();
      assert(!first.done && first.value.length > 0, "no first chunk");
      assertEquals(first.value[0], data[0]);
      await reader.cancel();
      // A full read is byte-identical.
      const got = await readAll(await backend.get("ranges/obj"));
      assertEquals(got.length, data.length);
      assert(got.every((b, i) => b === data[i]), "bytes differ");
      await backend.delete("ranges/obj");
    } finally {
      await backend.close();
    }
  },
});

/**
 * A TCP proxy in front of Swift (bytes pass untouched, so SigV4 still verifies) that stalls the
 * response of the first ranged GET whose range starts at `stallAt`: after a few KB the bytes stop
 * flowing but the connection stays open. Every byte passed on is written in full (the editing proxy
 * uses `writeAll`): this test's own proxy once ignored partial writes under load and dropped bytes
 * mid-range, which the client read as a stall and retried, appending the range's true tail after
 * the gap ("bytes differ after the retry").
 */
function stallingProxy(target: number, stallAt: number) {
  let stalled = 0;
  const proxy = startEditingProxy(target, () => {
    let stallThis = false;
    let passed = 0;
    return {
      request: (chunk) => {
        const head = new TextDecoder().decode(chunk.subarray(0, 4096));
        if (stalled === 0 && new RegExp(`range: bytes=${stallAt}-`, "i").test(head)) {
          stalled++;
          stallThis = true;
        }
        return chunk;
      },
      response: (chunk) => {
        if (!stallThis) return chunk;
        if (passed > 8192) return null; // swallow: the client sees an idle connection
        passed += chunk.length;
        return chunk;
      },
    };
  });
  return { port: proxy.port, stalls: () => stalled, close: proxy.close };
}

Deno.test({
  name: "s3: stale multipart uploads of killed saves are swept; young ones (a running save) stay",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const backend = backendFor(s);
    try {
      const created = await backend.client.send(
        new CreateMultipartUploadCommand({ Bucket: s.bucket, Key: "killed/node_modules" }),
      );
      const listed = async () =>
        (await backend.client.send(new ListMultipartUploadsCommand({ Bucket: s.bucket, Prefix: "killed/" })))
          .Uploads ?? [];
      assertEquals((await listed()).map((u) => u.UploadId), [created.UploadId]);
      assertEquals(await backend.sweepStale("killed/"), 0, "a young upload may belong to a running save");
      assertEquals((await listed()).length, 1);
      assertEquals(await backend.sweepStale("killed/", 0), 1);
      assertEquals(await listed(), []);
      assertEquals(await backend.stat("killed/node_modules"), null);
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  name: "s3: a stalled download range hits the idle timeout and is retried",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const owner = backendFor(s);
    const data = seededBytes(16 * MiB, 21);
    await owner.put("stall/obj", streamOf(data, MiB), {});
    const proxy = stallingProxy(Number(new URL(s.endpoint).port), 5 * MiB);
    const client = makeS3Client({
      region: s.region,
      endpoint: `http://127.0.0.1:${proxy.port}`,
      pathStyle: true,
      credentials: () => Promise.resolve({ accessKeyId: s.accessKey, secretAccessKey: s.secretKey }),
      idleTimeoutMs: 1500,
      concurrency: 2,
    });
    const backend = new S3Backend({
      client,
      bucket: s.bucket,
      partSize: 5 * MiB,
      maxObjectSize: 5 * MiB * 10_000, // keeps the ranges at exactly 5 MiB
      concurrency: 2,
      idleTimeoutMs: 1500,
    });
    try {
      const got = await readAll(await backend.get("stall/obj"));
      assertEquals(proxy.stalls(), 1, "the proxy did not stall a range");
      assertEquals(got.length, data.length);
      assert(got.every((b, i) => b === data[i]), "bytes differ after the retry");
    } finally {
      await backend.close();
      proxy.close();
      await owner.delete("stall/obj");
      await owner.close();
    }
  },
});

Deno.test({
  name: "s3: deleteMany removes objects in batches with Content-MD5 (Swift requires it)",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const backend = backendFor(s);
    try {
      const names = Array.from({ length: 12 }, (_, i) => `many/${i}`);
      for (const n of names) await backend.put(n, streamOf(new TextEncoder().encode(n)), {});
      await backend.deleteMany([...names, "many/not-there"]);
      const left = [];
      for await (const o of backend.list("many/")) left.push(o.name);
      assertEquals(left, []);
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  name: "s3: directory-bucket listing asks for the enclosing prefix and filters",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const backend = backendFor(s, { directoryBucket: true });
    try {
      for (const n of ["dir/ab/1", "dir/ab/2", "dir/ac/3", "dir/b"]) {
        await backend.put(n, streamOf(new TextEncoder().encode(n)), {});
      }
      const names = [];
      for await (const o of backend.list("dir/a")) names.push(o.name);
      assertEquals(names.sort(), ["dir/ab/1", "dir/ab/2", "dir/ac/3"]);
      await backend.deleteMany(["dir/ab/1", "dir/ab/2", "dir/ac/3", "dir/b"]);
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  name: "s3: createS3Backend with static keys logs the method once, never the secret",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const { log, lines } = capture();
    const backend = await createS3Backend(settingsOf(s.env), log);
    try {
      await roundTrip(backend, "static/obj");
      const infoLines = lines.filter((l) => l.includes("auth="));
      assertEquals(infoLines.length, 1);
      assertStringIncludes(infoLines[0], 'auth="static keys"');
      assertNoSecret(lines.join("\n"), s.secretKey);
    } finally {
      await backend.close?.();
    }
    // With a session token (Swift signs but ignores it): works, and the token is never logged.
    const token = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789";
    const c2 = capture();
    const b2 = await createS3Backend(settingsOf({ ...s.env, PLUGIN_SESSION_TOKEN: token }), c2.log);
    try {
      await roundTrip(b2, "static/token");
      assert(c2.lines.some((l) => l.includes("static keys with session token")), "method not logged");
      assertNoSecret(c2.lines.join("\n"), token, s.secretKey);
    } finally {
      await b2.close?.();
    }
  },
});

Deno.test({
  name: "s3: wrong secret is AuthFailedError saying the secret key is wrong, without the secret",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const { log, lines } = capture();
    const wrong = "not-the-right-secret-123";
    const err = await assertRejects(
      () => createS3Backend(settingsOf({ ...s.env, PLUGIN_SECRET_KEY: wrong }), log),
      AuthFailedError,
    );
    assertStringIncludes(err.message, "secret key is wrong");
    assertNoSecret(text(err, lines), wrong);
    // Also on an object operation of an already built backend.
    const backend = new S3Backend({ client: clientFor(s, s.accessKey, wrong), bucket: s.bucket, log });
    try {
      const e2 = await assertRejects(() => backend.stat("x/y"), AuthFailedError);
      assertStringIncludes(e2.message, "secret key is wrong");
      await assertRejects(() => backend.get("x/y"), AuthFailedError);
      assertNoSecret(text(e2, lines), wrong);
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  name: "s3: unknown bucket is NotFoundError naming the bucket",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const { log } = capture();
    const err = await assertRejects(
      () => createS3Backend(settingsOf({ ...s.env, PLUGIN_BUCKET: "no-such-bucket-xyz" }), log),
      NotFoundError,
    );
    assertStringIncludes(err.message, '"no-such-bucket-xyz"');
    const backend = new S3Backend({ client: clientFor(s), bucket: "no-such-bucket-xyz" });
    try {
      const e2 = await assertRejects(() => backend.put("a", streamOf(new Uint8Array(3)), {}), NotFoundError);
      assertStringIncludes(e2.message, '"no-such-bucket-xyz"');
      const e3 = await assertRejects(async () => {
        for await (const _ of backend.list("")) { /* nothing */ }
      }, NotFoundError);
      assertStringIncludes(e3.message, "does not exist");
    } finally {
      await backend.close();
    }
  },
});

Deno.test({
  name: "s3: a user without rights on the bucket gets AccessDeniedError",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const owner = backendFor(s);
    await owner.put("denied/obj", streamOf(new TextEncoder().encode("secret data")), {});
    const { log, lines } = capture();
    const backend = await createS3Backend(
      settingsOf({ ...s.env, PLUGIN_ACCESS_KEY: s.readerAccessKey, PLUGIN_SECRET_KEY: s.readerSecretKey }),
      log,
    );
    try {
      const e1 = await assertRejects(() => backend.stat("denied/obj"), AccessDeniedError);
      assertStringIncludes(e1.message, `"${s.bucket}"`);
      await assertRejects(() => backend.get("denied/obj"), AccessDeniedError);
      await assertRejects(
        () => backend.put("denied/new", streamOf(new Uint8Array(10)), {}),
        AccessDeniedError,
      );
      // A refused multipart upload cancels the caller's (endless) stream, so its producer stops.
      let cancelled = false;
      const endless = new ReadableStream<Uint8Array>({
        pull: (c) => c.enqueue(new Uint8Array(MiB)),
        cancel: () => {
          cancelled = true;
        },
      });
      await assertRejects(() => backend.put("denied/endless", endless, {}), AccessDeniedError);
      assert(cancelled, "the source stream was not cancelled");
      await assertRejects(async () => {
        for await (const _ of backend.list("denied/")) { /* nothing */ }
      }, AccessDeniedError);
      assertNoSecret(lines.join("\n"), s.readerSecretKey);
    } finally {
      await backend.close?.();
      await owner.delete("denied/obj");
      await owner.close();
    }
  },
});

Deno.test({
  name: "s3: an unreachable endpoint is UnavailableError naming the endpoint",
  ...sdkTest,
  async fn() {
    const port = freePort();
    const { log, lines } = capture();
    const err = await assertRejects(
      () =>
        createS3Backend(
          settingsOf({
            PLUGIN_BACKEND: "s3",
            PLUGIN_ENDPOINT: `http://127.0.0.1:${port}`,
            PLUGIN_BUCKET: "b",
            PLUGIN_ACCESS_KEY: "AKIDEXAMPLE",
            PLUGIN_SECRET_KEY: "unreachable-secret-value",
            PLUGIN_PATH_STYLE: "true",
          }),
          log,
        ),
      UnavailableError,
    );
    assertStringIncludes(err.message, `http://127.0.0.1:${port}`);
    assertNoSecret(text(err, lines), "unreachable-secret-value");
  },
});

Deno.test({
  name: "s3: settings errors: no bucket, unknown encryption (refused with the settings)",
  ...sdkTest,
  async fn() {
    const { log } = capture();
    await assertRejects(
      () => createS3Backend(settingsOf({ PLUGIN_BACKEND: "s3" }), log),
      InvalidSettingsError,
      "PLUGIN_BUCKET",
    );
    // An unknown encryption is refused with the settings, before any backend exists.
    assertThrows(
      () => settingsOf({ PLUGIN_BUCKET: "b", PLUGIN_ENCRYPTION: "rot13" }),
      SettingsError,
      "AES256",
    );
  },
});

function webIdentityRole(s: SwiftServer, extra: Partial<StsRole> = {}): StsRole {
  return {
    arn: ROLE,
    accessKeyId: s.accessKey,
    secretAccessKey: s.secretKey,
    webIdentityTokens: [OIDC_TOKEN],
    ...extra,
  };
}

Deno.test({
  name: "s3: web identity (OIDC token → AssumeRoleWithWebIdentity at PLUGIN_STS_ENDPOINT), refreshed",
  ...sdkTest,
  async fn() {
    const s = await swift();
    // Credentials that expire within the SDK's 5-minute refresh window are fetched again when needed.
    await withSts([webIdentityRole(s)], async (sts) => {
      const { PLUGIN_ACCESS_KEY: _a, PLUGIN_SECRET_KEY: _s, ...noKeys } = s.env;
      const { log, lines } = capture();
      const backend = await createS3Backend(
        settingsOf({ ...noKeys, ...sts.env, PLUGIN_ASSUME_ROLE_ARN: ROLE, PLUGIN_OIDC_TOKEN_ID: OIDC_TOKEN }),
        log,
      );
      try {
        await roundTrip(backend, "wi/obj");
        const calls = sts.calls.filter((c) => c.action === "AssumeRoleWithWebIdentity" && c.status === 200);
        assert(calls.length >= 2, `expected refreshes, got ${calls.length} STS calls`);
        assertEquals(calls[0].roleArn, ROLE);
        assertEquals(calls[0].sessionName, "drone-cache");
        assert(lines.some((l) => l.includes("web identity")), "auth method not logged");
        assertNoSecret(lines.join("\n"), OIDC_TOKEN, s.secretKey);
      } finally {
        await backend.close?.();
      }
    }, 120);
  },
});

Deno.test({
  name: "s3: web identity failures: unknown token is AuthFailedError, untrusted role AccessDeniedError",
  ...sdkTest,
  async fn() {
    const s = await swift();
    await withSts([webIdentityRole(s)], async (sts) => {
      const { PLUGIN_ACCESS_KEY: _a, PLUGIN_SECRET_KEY: _s, ...noKeys } = s.env;
      const bad = "eyJ.unknown-token-that-sts-refuses.sig";
      const c1 = capture();
      const e1 = await assertRejects(
        () =>
          createS3Backend(
            settingsOf({ ...noKeys, ...sts.env, PLUGIN_ASSUME_ROLE_ARN: ROLE, PLUGIN_OIDC_TOKEN_ID: bad }),
            c1.log,
          ),
        AuthFailedError,
      );
      assertStringIncludes(e1.message, "OIDC token");
      assertNoSecret(text(e1, c1.lines), bad);
      assertEquals(sts.calls.at(-1)?.status, 400);
      const c2 = capture();
      const e2 = await assertRejects(
        () =>
          createS3Backend(
            settingsOf({
              ...noKeys,
              ...sts.env,
              PLUGIN_ASSUME_ROLE_ARN: "arn:aws:iam::000000000000:role/other",
              PLUGIN_OIDC_TOKEN_ID: OIDC_TOKEN,
            }),
            c2.log,
          ),
        AccessDeniedError,
      );
      assertStringIncludes(e2.message, "STS");
      assertNoSecret(text(e2, c2.lines), OIDC_TOKEN);
    });
  },
});

Deno.test({
  name: "s3: user-role chaining: web identity role, then the user role with its external id",
  ...sdkTest,
  async fn() {
    const s = await swift();
    // The first role only gets the reader's keys (no rights on the bucket); the chained user role gets the owner's.
    const roles: StsRole[] = [
      {
        arn: ROLE,
        accessKeyId: s.readerAccessKey,
        secretAccessKey: s.readerSecretKey,
        webIdentityTokens: [OIDC_TOKEN],
      },
      {
        arn: USER_ROLE,
        accessKeyId: s.accessKey,
        secretAccessKey: s.secretKey,
        trustedKeys: [s.readerAccessKey],
        externalId: "ext-42",
      },
    ];
    await withSts(roles, async (sts) => {
      const { PLUGIN_ACCESS_KEY: _a, PLUGIN_SECRET_KEY: _s, ...noKeys } = s.env;
      const env = {
        ...noKeys,
        ...sts.env,
        PLUGIN_ASSUME_ROLE_ARN: ROLE,
        PLUGIN_OIDC_TOKEN_ID: OIDC_TOKEN,
        PLUGIN_USER_ROLE_ARN: USER_ROLE,
        PLUGIN_USER_ROLE_EXTERNAL_ID: "ext-42",
      };
      const { log, lines } = capture();
      const backend = await createS3Backend(settingsOf(env), log);
      try {
        await roundTrip(backend, "chain/obj");
      } finally {
        await backend.close?.();
      }
      const assumed = sts.calls.find((c) => c.action === "AssumeRole" && c.status === 200);
      assertEquals(assumed?.roleArn, USER_ROLE);
      assertEquals(assumed?.caller, s.readerAccessKey);
      assertEquals(assumed?.externalId, "ext-42");
      assert(lines.some((l) => l.includes("then user role")), "chaining not logged");
      assertNoSecret(lines.join("\n"), OIDC_TOKEN, s.secretKey, s.readerSecretKey);
      // A wrong external id is refused by STS.
      const c2 = capture();
      await assertRejects(
        () => createS3Backend(settingsOf({ ...env, PLUGIN_USER_ROLE_EXTERNAL_ID: "wrong" }), c2.log),
        AccessDeniedError,
      );
    });
  },
});

/** Runs `fn` with these process environment variables set (the SDK default chain reads them). */
async function withProcessEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = Deno.env.get(k);
    if (v === undefined) Deno.env.delete(k);
    else Deno.env.set(k, v);
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  }
}

const CLEAN_AWS_ENV = {
  AWS_ACCESS_KEY_ID: undefined,
  AWS_SECRET_ACCESS_KEY: undefined,
  AWS_SESSION_TOKEN: undefined,
  AWS_WEB_IDENTITY_TOKEN_FILE: undefined,
  AWS_ROLE_ARN: undefined,
  AWS_PROFILE: undefined,
  AWS_CONFIG_FILE: "/nonexistent/aws-config",
  AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/aws-credentials",
  AWS_EC2_METADATA_DISABLED: "true",
};

Deno.test({
  name: "s3: assume role with external id over the default chain (env keys)",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const role = {
      ...webIdentityRole(s),
      webIdentityTokens: [],
      trustedKeys: [s.accessKey],
      externalId: "ext-1",
    };
    await withSts([role], async (sts) => {
      const { PLUGIN_ACCESS_KEY: _a, PLUGIN_SECRET_KEY: _s, ...noKeys } = s.env;
      await withProcessEnv(
        { ...CLEAN_AWS_ENV, AWS_ACCESS_KEY_ID: s.accessKey, AWS_SECRET_ACCESS_KEY: s.secretKey },
        async () => {
          const { log, lines } = capture();
          const env = { ...noKeys, ...sts.env, PLUGIN_ASSUME_ROLE_ARN: ROLE, PLUGIN_EXTERNAL_ID: "ext-1" };
          const backend = await createS3Backend(settingsOf(env), log);
          try {
            await roundTrip(backend, "assume/obj");
          } finally {
            await backend.close?.();
          }
          const call = sts.calls.find((c) => c.action === "AssumeRole" && c.status === 200);
          assertEquals(call?.externalId, "ext-1");
          assertEquals(call?.caller, s.accessKey);
          assert(lines.some((l) => l.includes("assume role")), "method not logged");
          const c2 = capture();
          await assertRejects(
            () => createS3Backend(settingsOf({ ...env, PLUGIN_EXTERNAL_ID: "nope" }), c2.log),
            AccessDeniedError,
          );
        },
      );
    });
  },
});

Deno.test({
  name: "s3: default chain: env keys, then the IRSA token file through PLUGIN_STS_ENDPOINT",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const { PLUGIN_ACCESS_KEY: _a, PLUGIN_SECRET_KEY: _s, ...noKeys } = s.env;
    await withProcessEnv({
      ...CLEAN_AWS_ENV,
      AWS_ACCESS_KEY_ID: s.accessKey,
      AWS_SECRET_ACCESS_KEY: s.secretKey,
    }, async () => {
      const { log, lines } = capture();
      const backend = await createS3Backend(settingsOf(noKeys), log);
      try {
        await roundTrip(backend, "chain-env/obj");
      } finally {
        await backend.close?.();
      }
      assert(lines.some((l) => l.includes("default credential chain")), "method not logged");
    });
    await withSts([webIdentityRole(s)], async (sts) => {
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/token`, OIDC_TOKEN);
        await withProcessEnv(
          { ...CLEAN_AWS_ENV, AWS_WEB_IDENTITY_TOKEN_FILE: `${dir}/token`, AWS_ROLE_ARN: ROLE },
          async () => {
            const { log } = capture();
            const backend = await createS3Backend(settingsOf({ ...noKeys, ...sts.env }), log);
            try {
              await roundTrip(backend, "irsa/obj");
            } finally {
              await backend.close?.();
            }
            assert(sts.calls.some((c) => c.action === "AssumeRoleWithWebIdentity" && c.status === 200));
          },
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
});

/** The fetch backend (static keys, no SDK) on `endpoint` (default: Swift itself). */
function fetchBackendFor(
  s: SwiftServer,
  endpoint = s.endpoint,
  extra: Partial<ConstructorParameters<typeof FetchS3Backend>[0]> = {},
  policy: Partial<RetryPolicy> = {},
) {
  return new FetchS3Backend({
    meta: new S3Meta({
      endpoint,
      pathStyle: true,
      region: s.region,
      bucket: s.bucket,
      endpointLabel: endpoint,
      credentials: { accessKeyId: s.accessKey, secretAccessKey: s.secretKey },
      policy: { ...DEFAULT_RETRY_POLICY, idleMs: 30_000, baseMs: 50, ...policy },
    }),
    bucket: s.bucket,
    partSize: 5 * MiB,
    concurrency: 2,
    ...extra,
  });
}

/** The multipart uploads pending under `prefix` (ListMultipartUploads over fetch). */
async function pendingUploads(backend: FetchS3Backend, prefix: string): Promise<string[]> {
  const { body } = await backend.meta.request({
    op: "sweep",
    method: "GET",
    url: backend.meta.url(undefined, { uploads: "", prefix }),
    read: (res) => res.text(),
  });
  return [...(body as string).matchAll(/<Upload>[\s\S]*?<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
}

Deno.test({
  name:
    "s3 (fetch path): a part that keeps failing aborts the multipart upload: no object, no pending upload",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const owner = fetchBackendFor(s);
    const old = seededBytes(2 * MiB + 1, 40);
    await owner.put("fpart/obj", streamOf(old, MiB), { cicache_format: "tar" });
    // Part 2 of every multipart upload answers 500 (after the retries, the put fails).
    const proxy = startFaultProxy(
      Number(new URL(s.endpoint).port),
      (r) =>
        r.method === "PUT" && /[?&]partNumber=2(&|$)/.test(r.path)
          ? { kind: "status", status: 500 }
          : { kind: "pass" },
    );
    const backend = fetchBackendFor(s, proxy.url, {}, { retries: 1 });
    try {
      const data = seededBytes(12 * MiB + 3, 41);
      const err = await assertRejects(() => backend.put("fpart/obj", streamOf(data, MiB), {}));
      assert(err instanceof UnavailableError, `not an UnavailableError: ${err}`);
      assertStringIncludes(String(err), "HTTP 500");
      assert(
        proxy.log.some((e) => e.method === "DELETE" && /uploadId=/.test(e.path)),
        "the multipart upload was not aborted",
      );
      assertEquals(await pendingUploads(owner, "fpart/"), []);
      // The object under the key is still the previous one, whole.
      const info = await owner.stat("fpart/obj");
      assertEquals(info?.size, old.length);
      assertEquals(info?.meta, { cicache_format: "tar" });
      const got = await readAll(await owner.get("fpart/obj"));
      assert(got.length === old.length && got.every((b, i) => b === old[i]), "previous object changed");
      // A key with no previous object: nothing appears.
      await assertRejects(() => backend.put("fpart/new", streamOf(data, MiB), {}));
      assertEquals(await owner.stat("fpart/new"), null);
      assertEquals(await pendingUploads(owner, "fpart/"), []);
    } finally {
      await proxy.close();
      await owner.delete("fpart/obj");
    }
  },
});

Deno.test({
  name:
    "s3 (fetch path): ranged GETs are signed and pinned to the stat's ETag; a replaced object restarts whole",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const owner = fetchBackendFor(s);
    const first = seededBytes(3 * MiB + 5, 50);
    const second = seededBytes(3 * MiB + 9, 51);
    await owner.put("fpin/obj", streamOf(first, MiB), {});
    const seen: { method: string; range?: string; ifMatch?: string }[] = [];
    const proxy = startFaultProxy(Number(new URL(s.endpoint).port), (r) => {
      seen.push({ method: r.method, range: r.headers["range"], ifMatch: r.headers["if-match"] });
      return { kind: "pass" };
    });
    const backend = fetchBackendFor(s, proxy.url, { rangeSize: MiB });
    try {
      // stat then get (what a restore does): no second HEAD, four ranged GETs pinned to the ETag.
      assertEquals((await backend.stat("fpin/obj"))?.size, first.length);
      let got = await readAll(await backend.get("fpin/obj"));
      assert(got.length === first.length && got.every((b, i) => b === first[i]), "bytes differ");
      assertEquals(seen.filter((r) => r.method === "HEAD").length, 1);
      const gets = seen.filter((r) => r.method === "GET");
      assertEquals(
        gets.map((r) => r.range).sort(),
        [0, 1, 2, 3].map((i) => `bytes=${i * MiB}-${Math.min((i + 1) * MiB, first.length) - 1}`).sort(),
      );
      assert(gets.every((r) => r.ifMatch && r.ifMatch === gets[0].ifMatch), "ranges not pinned to one ETag");
      // Replaced between the stat and the download: the pinned ranges fail (412), the download restarts
      // on the new object before any byte went out, and hands out the new object whole.
      assertEquals((await backend.stat("fpin/obj"))?.size, first.length);
      await owner.put("fpin/obj", streamOf(second, MiB), {});
      got = await readAll(await backend.get("fpin/obj"));
      assert(got.length === second.length && got.every((b, i) => b === second[i]), "not the new object");
    } finally {
      await proxy.close();
      await owner.delete("fpin/obj");
    }
  },
});

Deno.test({
  name: "s3 (fetch path): sweepStale aborts only old uploads; deleteMany batches with Content-MD5",
  ...sdkTest,
  async fn() {
    const s = await swift();
    const backend = fetchBackendFor(s);
    const { body } = await backend.meta.request({
      op: "put",
      method: "POST",
      url: backend.meta.url("fkilled/node_modules", { uploads: "" }),
      read: (res) => res.text(),
    });
    assertStringIncludes(body as string, "<UploadId>");
    assertEquals(await pendingUploads(backend, "fkilled/"), ["fkilled/node_modules"]);
    assertEquals(await backend.sweepStale("fkilled/"), 0, "a young upload may belong to a running save");
    assertEquals(await pendingUploads(backend, "fkilled/"), ["fkilled/node_modules"]);
    assertEquals(await backend.sweepStale("fkilled/", 0), 1);
    assertEquals(await pendingUploads(backend, "fkilled/"), []);
    assertEquals(await backend.stat("fkilled/node_modules"), null);

    const names = Array.from({ length: 12 }, (_, i) => `fmany/${i} & <x>`);
    for (const n of names) await backend.put(n, streamOf(new TextEncoder().encode(n)), {});
    await backend.put("fmanykeep/0", streamOf(new TextEncoder().encode("keep")), {});
    await backend.deleteMany([...names, "fmany/not-there"]);
    const left = [];
    for await (const o of backend.list("fmany")) left.push(o.name);
    assertEquals(left, ["fmanykeep/0"]);
    await backend.delete("fmanykeep/0");
    await backend.delete("fmanykeep/0"); // a missing object is fine
  },
});

Deno.test({
  name: "s3: teardown stops Swift by PID",
  ...sdkTest,
  async fn() {
    if (swiftPromise === undefined) return;
    const s = await swiftPromise;
    swiftPromise = undefined;
    swiftDir = undefined;
    await s.stop();
    await assertRejects(() => fetch(`${s.endpoint}/healthcheck`));
    await assertRejects(() => Deno.stat(s.dir));
  },
});
