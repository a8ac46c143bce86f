/**
 * Tests of the harness backend against the test cache service
 * (scripts/servers/harness.ts), which hands out real SigV4 pre-signed URLs
 * for the Swift S3 server (scripts/servers/swift.ts): the data path is a
 * real S3 implementation checking signatures and expiry.
 *
 * One Swift and one service serve the whole file; the last test stops them,
 * and an unload handler kills Swift by PID should a filter skip that.
 *
 * @module
 */
import { backendConformance, readAll, seededBytes, streamOf } from "./backend_conformance.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import { GetObjectCommand, PutObjectCommand, S3Client } from "../lib/deps/aws_client_s3.ts";
import { createHarnessBackend, HarnessBackend } from "../lib/storage/harness/backend.ts";
import { goQueryEscape, HarnessClient, redactUrls } from "../lib/storage/harness/client.ts";
import { buildManifest, ManifestError, parseManifest } from "../lib/storage/harness/manifest.ts";
import {
  AccessDeniedError,
  AuthFailedError,
  NotFoundError,
  UnavailableError,
} from "../lib/storage/backend.ts";
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "../lib/storage/transfer/retry.ts";
import { run } from "../main.ts";
import { freePort, startSwift, type SwiftServer } from "../scripts/servers/swift.ts";
import { type HarnessService, startHarnessService } from "../scripts/servers/harness.ts";
import { createHash } from "node:crypto";

const MiB = 1024 * 1024;
const TOKEN = "hx-token-0123456789abcdef";
const ACCOUNT = "acct_Zx9";
const POLICY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, baseMs: 20, capMs: 200, idleMs: 30_000 };

let started: Promise<{ swift: SwiftServer; service: HarnessService; s3: S3Client }> | undefined;
let swiftDir: string | undefined;
function servers() {
  started ??= (async () => {
    const swift = await startSwift();
    swiftDir = swift.dir;
    const service = await startHarnessService({ swift, token: TOKEN, accountId: ACCOUNT });
    const s3 = new S3Client({
      region: swift.region,
      endpoint: swift.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: swift.accessKey, secretAccessKey: swift.secretKey },
    });
    return { swift, service, s3 };
  })();
  return started;
}
globalThis.addEventListener("unload", () => {
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

function clientFor(service: HarnessService, o: { token?: string; cacheType?: string; base?: string } = {}) {
  return new HarnessClient({
    baseUrl: o.base ?? `${service.baseUrl}/`,
    token: o.token ?? TOKEN,
    accountId: ACCOUNT,
    cacheType: o.cacheType ?? "",
    useGcs: false,
    policy: POLICY,
  });
}

function backendFor(
  service: HarnessService,
  o: {
    token?: string;
    cacheType?: string;
    multipart?: boolean;
    base?: string;
    log?: ReturnType<typeof capture>;
  } = {},
) {
  return new HarnessBackend({
    client: clientFor(service, o),
    accountId: ACCOUNT,
    partSize: 5 * MiB,
    rangeSize: 2 * MiB,
    concurrency: 3,
    multipart: o.multipart ?? true,
    maxSize: 1024 * MiB,
    policy: POLICY,
    log: o.log?.log,
  });
}

backendConformance("harness (legacy endpoints, multipart)", async () => {
  const { service } = await servers();
  return { backend: backendFor(service), lacks: { metadata: true, delete: true } };
});

backendConformance("harness (unified endpoints, spooled single PUT)", async () => {
  const { service } = await servers();
  return {
    backend: backendFor(service, { cacheType: "build", multipart: false }),
    lacks: { metadata: true, delete: true },
  };
});

Deno.test("harness: Go's url.QueryEscape", () => {
  assertEquals(goQueryEscape("a/b c+d=e&f~g_h.i-j"), "a%2Fb+c%2Bd%3De%26f~g_h.i-j");
  assertEquals(goQueryEscape("é!*'()"), "%C3%A9%21%2A%27%28%29");
});

Deno.test("harness: pre-signed URLs are redacted from messages", () => {
  assertEquals(
    redactUrls("error sending request for url (http://h:1/b/k?X-Amz-Signature=abc&X-Amz-Credential=x)"),
    "error sending request for url (http://h:1/b/k?…)",
  );
});

Deno.test("harness: service URLs are byte-identical to the Go plugin's", () => {
  const legacy = new HarnessClient({
    baseUrl: "https://svc.example/",
    token: "",
    accountId: "A/b",
    cacheType: "",
    useGcs: false,
    policy: POLICY,
  });
  assertEquals(
    legacy.endpoint("upload", "k e+y/node_modules"),
    "https://svc.example/cache/intel/upload?accountId=A/b&cacheKey=k+e%2By%2Fnode_modules&backend=s3",
  );
  assertEquals(
    legacy.endpoint("upload", "k/m", { key: "k/m", uploads: "" }),
    "https://svc.example/cache/intel/upload?accountId=A/b&cacheKey=k%2Fm&key=k%2Fm&uploads=&backend=s3",
  );
  assertEquals(
    legacy.endpoint("upload", "k/m.part2", { key: "k/m.part2", partNumber: "2", uploadId: "u 1" }),
    "https://svc.example/cache/intel/upload?accountId=A/b&cacheKey=k%2Fm.part2&key=k%2Fm.part2&partNumber=2&uploadId=u+1&backend=s3",
  );
  assertEquals(
    legacy.endpoint("list_entries", "k/"),
    "https://svc.example/cache/intel/list_entries?accountId=A/b&cacheKeyPrefix=k%2F&backend=s3",
  );
  const unified = new HarnessClient({
    baseUrl: "https://svc.example",
    token: "",
    accountId: "A",
    cacheType: "gradle",
    useGcs: true,
    policy: POLICY,
  });
  assertEquals(
    unified.endpoint("download", "k/m"),
    "https://svc.example/cache/unified/download?accountId=A&cacheKey=k%2Fm&cacheType=gradle&backend=gcs",
  );
  assertEquals(
    unified.endpoint("upload", "k/m", { uploadId: "u" }),
    "https://svc.example/cache/unified/upload?accountId=A&cacheKey=k%2Fm&cacheType=gradle&uploadId=u&backend=gcs",
  );
  assertEquals(
    unified.endpoint("exists", "k"),
    "https://svc.example/cache/unified/exists?accountId=A&cacheKey=k&cacheType=gradle&backend=gcs",
  );
});

Deno.test("harness: manifests are Go's XML and hostile ones are refused", () => {
  const xml = buildManifest({
    parts: [{ number: 2, etag: "e2", key: "k&<.part2" }, { number: 1, etag: "e1", key: "k&<.part1" }],
    checksum: "0123456789abcdef0123456789abcdef",
    size: 7,
  });
  assertEquals(
    xml,
    "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e1</ETag><Key>k&amp;&lt;.part1</Key></Part>" +
      "<Part><PartNumber>2</PartNumber><ETag>e2</ETag><Key>k&amp;&lt;.part2</Key></Part>" +
      "<Checksum>0123456789abcdef0123456789abcdef</Checksum><Size>7</Size></CompleteMultipartUpload>",
  );
  const back = parseManifest(xml, "k&<");
  assertEquals(back.parts.map((p) => p.key), ["k&<.part1", "k&<.part2"]);
  assertEquals(back.size, 7);
  const part = (n: string) => `<Part><PartNumber>${n}</PartNumber><ETag>e</ETag></Part>`;
  for (
    const bad of [
      `<CompleteMultipartUpload>${part("1")}${part("3")}</CompleteMultipartUpload>`,
      `<CompleteMultipartUpload>${part("0")}</CompleteMultipartUpload>`,
      `<CompleteMultipartUpload>${part("1")}${part("1")}</CompleteMultipartUpload>`,
      `<CompleteMultipartUpload>${part("-1")}</CompleteMultipartUpload>`,
      `<CompleteMultipartUpload></CompleteMultipartUpload>`,
      `<CompleteMultipartUpload>${part("1")}<Checksum>zz</Checksum></CompleteMultipartUpload>`,
      `<CompleteMultipartUpload>${part("1")}`,
      `<Other>${part("1")}</Other>`,
    ]
  ) {
    let threw = false;
    try {
      parseManifest(bad, "k");
    } catch (err) {
      threw = err instanceof ManifestError;
    }
    assert(threw, `accepted ${bad}`);
  }
  // A Go manifest without <Key> elements uses Go's part names.
  assertEquals(
    parseManifest(`<CompleteMultipartUpload>${part("1")}</CompleteMultipartUpload>`, "a/b").parts[0].key,
    "a/b.part1",
  );
});

Deno.test({
  name: "harness: a multipart save sends the Go plugin's exact requests and a manifest Go can read",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { service, s3, swift } = await servers();
    const backend = backendFor(service);
    const name = `q-${crypto.randomUUID().slice(0, 6)}/k e+y/node_modules`;
    const data = seededBytes(11 * MiB + 3, 21);
    service.requests.length = 0;
    await backend.put(name, streamOf(data, 70_001), {});
    const esc = goQueryEscape(name);
    const presigns = service.requests.filter((r) => r.startsWith("GET /cache/"));
    assertEquals(
      presigns[0],
      `GET /cache/intel/upload?accountId=${ACCOUNT}&cacheKey=${esc}&key=${esc}&uploads=&backend=s3`,
    );
    const uploadId = service.requests[1].match(/initiate\/([0-9a-f-]+)$/)?.[1];
    assert(uploadId, `no initiate PUT in ${service.requests[1]}`);
    const parts = presigns.slice(1, 4).sort();
    for (const n of [1, 2, 3]) {
      const pk = goQueryEscape(`${name}.part${n}`);
      assertEquals(
        parts[n - 1],
        `GET /cache/intel/upload?accountId=${ACCOUNT}&cacheKey=${pk}&key=${pk}&partNumber=${n}&uploadId=${uploadId}&backend=s3`,
      );
    }
    assertEquals(
      presigns[4],
      `GET /cache/intel/upload?accountId=${ACCOUNT}&cacheKey=${esc}&uploadId=${uploadId}&backend=s3`,
    );
    assertEquals(presigns.length, 5);
    assert(service.tokens.every((t) => t === TOKEN), "a call lacked X-Harness-Token");
    // What the Go plugin reads: the manifest under the key, parts at <key>.partN, MD5 of the whole.
    const raw = await s3.send(new GetObjectCommand({ Bucket: swift.bucket, Key: service.storageKey(name) }));
    const xml = await raw.Body!.transformToString();
    const md5 = createHash("md5").update(data).digest("hex");
    assert(xml.startsWith("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"), xml);
    assertStringIncludes(xml, `<Key>${name}.part3</Key></Part><Checksum>${md5}</Checksum>`);
    const joined: Uint8Array[] = [];
    for (const p of parseManifest(xml, name).parts) {
      const o = await s3.send(new GetObjectCommand({ Bucket: swift.bucket, Key: service.storageKey(p.key) }));
      joined.push(await o.Body!.transformToByteArray());
    }
    const all = new Uint8Array(await new Blob(joined as Uint8Array<ArrayBuffer>[]).arrayBuffer());
    assertEquals(createHash("md5").update(all).digest("hex"), md5);
    // One ranged GET of the first range shows it is a manifest; then the parts.
    service.requests.length = 0;
    const back = await readAll(await backend.get(name));
    assertEquals(createHash("md5").update(back).digest("hex"), md5);
    const downloads = service.requests.filter((r) => r.startsWith("GET /cache/intel/download"));
    assertEquals(downloads.filter((r) => r.includes(`cacheKey=${esc}&`)).length, 1);
    assertEquals(downloads.length, 4, downloads.join("\n"));
    // Parts never show in listings; the listed size is the object's.
    const listed = [];
    for await (const info of backend.list(name.slice(0, name.indexOf("/") + 1))) listed.push(info);
    assertEquals(listed.map((i) => [i.name, i.size]), [[name, data.length]]);
    assertEquals((await backend.stat(name))?.size, data.length);
  },
});

/** Writes an object straight into the bucket, as the Go plugin would have. */
async function putRaw(s3: S3Client, swift: SwiftServer, key: string, body: Uint8Array | string) {
  await s3.send(new PutObjectCommand({ Bucket: swift.bucket, Key: key, Body: body }));
}

/** A tar archive of `dir` with absolute names, as the Go plugin writes them (GNU tar -P). */
async function goTar(dir: string): Promise<Uint8Array> {
  const out = await new Deno.Command("tar", { args: ["-cPf", "-", dir], stdout: "piped" }).output();
  assert(out.success, "tar failed");
  return out.stdout;
}

Deno.test({
  name:
    "harness: Go-plugin objects restore through the CLI (single object and multipart manifest, legacy listing)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { service, s3, swift } = await servers();
    const dir = await Deno.makeTempDir();
    try {
      const src = `${dir}/src`;
      await Deno.mkdir(`${src}/deep`, { recursive: true });
      const big = seededBytes(3 * MiB + 77, 5);
      await Deno.writeFile(`${src}/deep/big.bin`, big);
      await Deno.writeTextFile(`${src}/a.txt`, "from go");
      const archive = await goTar(src);
      const key = `go-${crypto.randomUUID().slice(0, 6)}`;
      const objectPath = src.replace(/^\//, "");
      // Single object under the key (what Go's single PUT leaves).
      await putRaw(s3, swift, service.storageKey(`${key}/${objectPath}`), archive);
      // Multipart under a second key: parts plus a Go manifest (no <Key>, no <Size>) with the MD5.
      const key2 = `${key}-mp`;
      const name2 = `${key2}/${objectPath}`;
      const cut = [0, 1.5 * MiB, 3 * MiB, archive.length]; // Go cuts equal parts but the last
      let partsXml = "";
      for (let i = 1; i < cut.length; i++) {
        await putRaw(
          s3,
          swift,
          service.storageKey(`${name2}.part${i}`),
          archive.subarray(cut[i - 1], cut[i]),
        );
        partsXml += `<Part><PartNumber>${i}</PartNumber><ETag>x</ETag></Part>`;
      }
      const md5 = createHash("md5").update(archive).digest("hex");
      await putRaw(
        s3,
        swift,
        service.storageKey(name2),
        `<CompleteMultipartUpload>${partsXml}<Checksum>${md5}</Checksum></CompleteMultipartUpload>`,
      );
      const lines: string[] = [];
      const env = {
        PLUGIN_BACKEND: "harness",
        PLUGIN_CACHE_SERVICE_BASE_URL: service.baseUrl,
        PLUGIN_CACHE_SERVICE_BEARER_TOKEN: TOKEN,
        PLUGIN_ACCOUNT_ID: ACCOUNT,
        PLUGIN_RESTORE: "true",
        PLUGIN_LOG_LEVEL: "debug",
      };
      for (const k of [key, key2]) {
        await Deno.remove(src, { recursive: true });
        // No mounts: the legacy listing returns <account>/intel/<key>/… paths.
        const code = await run([], { ...env, PLUGIN_CACHE_KEY: k }, { sink: (l) => lines.push(l) });
        assertEquals(code, 0, lines.join("\n"));
        assertEquals(await Deno.readTextFile(`${src}/a.txt`), "from go", lines.join("\n"));
        const back = await Deno.readFile(`${src}/deep/big.bin`);
        assert(back.length === big.length && back.every((b, i) => b === big[i]), "restored bytes differ");
      }
      assert(!lines.join("\n").includes(TOKEN), "the token was logged");
      assert(!lines.join("\n").includes("X-Amz-Signature"), "a pre-signed URL was logged");
      // A Go manifest records no size: stat adds up its parts (HEAD), list sums the hidden part entries.
      const backend = backendFor(service);
      assertEquals((await backend.stat(name2))?.size, archive.length);
      const listed = [];
      for await (const info of backend.list(`${key2}/`)) listed.push([info.name, info.size]);
      assertEquals(listed, [[name2, archive.length]]);
      // A manifest whose checksum does not match is refused, not restored.
      await putRaw(
        s3,
        swift,
        service.storageKey(name2),
        `<CompleteMultipartUpload>${partsXml}<Checksum>${
          "0".repeat(32)
        }</Checksum></CompleteMultipartUpload>`,
      );
      const err = await assertRejects(async () => await readAll(await backend.get(name2)));
      assertStringIncludes(String(err), "does not match the manifest's checksum");
      // A manifest whose middle part is shorter than the first (parts are cut equal) is refused too.
      const shuffled = [2, 3, 1].map((p, i) =>
        `<Part><PartNumber>${i + 1}</PartNumber><ETag>x</ETag><Key>${name2}.part${p}</Key></Part>`
      ).join("");
      await putRaw(
        s3,
        swift,
        service.storageKey(name2),
        `<CompleteMultipartUpload>${shuffled}</CompleteMultipartUpload>`,
      );
      const uneven = await assertRejects(async () => await readAll(await backend.get(name2)));
      assertStringIncludes(String(uneven), "corrupt multipart object");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "harness: an expired pre-signed URL is retried with a fresh one; a URL that stays refused fails clearly",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { service } = await servers();
    const { log, lines } = capture();
    const backend = backendFor(service, { log: { log, lines } });
    const name = `exp-${crypto.randomUUID().slice(0, 6)}/obj`;
    const data = seededBytes(100_000, 3);
    service.expireNext(1);
    service.requests.length = 0;
    await backend.put(name, streamOf(data), {});
    assertEquals(service.requests.filter((r) => r.includes("/cache/intel/upload")).length, 2);
    service.expireNext(1);
    service.requests.length = 0;
    assertEquals(await readAll(await backend.get(name)), data);
    assertEquals(service.requests.filter((r) => r.includes("/cache/intel/download")).length, 2);
    assert(lines.some((l) => l.includes("retrying") && l.includes("403")), lines.join("\n"));
    service.expireNext(100);
    const err = await assertRejects(() => backend.get(name));
    assert(err instanceof AccessDeniedError, String(err));
    assertStringIncludes(err.message, "pre-signed URL");
    service.expireNext(0);
    assert(!lines.join("\n").includes("X-Amz-Signature"), "a pre-signed URL was logged");
    assert(!lines.join("\n").includes(TOKEN), "the token was logged");
  },
});

Deno.test({
  name: "harness: wrong token, service errors and transport errors fail clearly (never as a miss)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { service } = await servers();
    const wrong = backendFor(service, { token: "not-the-token" });
    const err = await assertRejects(() => wrong.stat("k/m"));
    assert(err instanceof AuthFailedError, String(err));
    assertStringIncludes(err.message, "PLUGIN_CACHE_SERVICE_BEARER_TOKEN");
    await assertRejects(() => wrong.put("k/m", streamOf(new Uint8Array(3)), {}), AuthFailedError);
    // Over PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB: refused while reading, nothing stored.
    const small = new HarnessBackend({
      client: clientFor(service),
      accountId: ACCOUNT,
      partSize: MiB,
      concurrency: 2,
      multipart: true,
      maxSize: 2 * MiB,
      policy: POLICY,
    });
    const big = `max-${crypto.randomUUID().slice(0, 6)}`;
    const tooLarge = await assertRejects(() => small.put(big, streamOf(seededBytes(3 * MiB, 2)), {}));
    assertStringIncludes(String(tooLarge), "PLUGIN_MULTIPART_MAX_UPLOAD_SIZE_MB");
    assertEquals(await small.stat(big), null);
    // A miss is NotFound on get and null on stat.
    const backend = backendFor(service);
    await assertRejects(() => backend.get(`miss-${crypto.randomUUID()}`), NotFoundError);
    assertEquals(await backend.stat(`miss-${crypto.randomUUID()}`), null);
    // 5xx from the service is retried ...
    const name = `svc-${crypto.randomUUID().slice(0, 6)}/obj`;
    service.failNext(2, 503);
    await backend.put(name, streamOf(new TextEncoder().encode("ok")), {});
    assertEquals(new TextDecoder().decode(await readAll(await backend.get(name))), "ok");
    // ... and reported with the setting to check when it persists.
    service.failNext(100, 502);
    const down = await assertRejects(() => backend.stat(name));
    assert(down instanceof UnavailableError, String(down));
    assertStringIncludes(down.message, "PLUGIN_CACHE_SERVICE_BASE_URL");
    service.failNext(0, 500);
    // A service that cannot be reached is an error, not "absent".
    const gone = backendFor(service, { base: `http://127.0.0.1:${freePort()}` });
    const unreachable = await assertRejects(() => gone.stat(name));
    assert(unreachable instanceof UnavailableError, String(unreachable));
    assertStringIncludes(unreachable.message, "PLUGIN_CACHE_SERVICE_BASE_URL");
  },
});

Deno.test({
  name:
    "harness: settings build the backend; a save and restore through the CLI keep the token out of the logs",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { service, swift, s3 } = await servers();
    const missing = await assertRejects(() =>
      Promise.resolve().then(() =>
        createHarnessBackend(settingsFrom({ PLUGIN_BACKEND: "harness" }), capture().log, {})
      )
    );
    assertStringIncludes(String(missing), "PLUGIN_CACHE_SERVICE_BASE_URL");
    const zero = await assertRejects(() =>
      Promise.resolve().then(() =>
        createHarnessBackend(
          settingsFrom({
            PLUGIN_BACKEND: "harness",
            PLUGIN_CACHE_SERVICE_BASE_URL: service.baseUrl,
            PLUGIN_MULTIPART_CHUNK_SIZE_MB: "0",
          }),
          capture().log,
          {},
        )
      )
    );
    assertStringIncludes(String(zero), "PLUGIN_MULTIPART_CHUNK_SIZE_MB");
    // HARNESS_CI_USE_GCS_CACHE_SERVICE=true (any case) sends backend=gcs.
    const gcs = createHarnessBackend(
      settingsFrom({
        PLUGIN_BACKEND: "harness",
        PLUGIN_CACHE_SERVICE_BASE_URL: service.baseUrl,
        PLUGIN_CACHE_SERVICE_BEARER_TOKEN: TOKEN,
        PLUGIN_ACCOUNT_ID: ACCOUNT,
      }),
      capture().log,
      { HARNESS_CI_USE_GCS_CACHE_SERVICE: "TRUE" },
    );
    service.requests.length = 0;
    assertEquals(await gcs.stat("gcs/missing"), null);
    assertEquals(
      service.requests[0],
      `GET /cache/intel/exists?accountId=${ACCOUNT}&cacheKey=gcs%2Fmissing&backend=gcs`,
    );
    const dir = await Deno.makeTempDir();
    try {
      const mount = `${dir}/cache`;
      await Deno.mkdir(`${mount}/sub`, { recursive: true });
      const big = seededBytes(7 * MiB, 8);
      await Deno.writeFile(`${mount}/sub/big.bin`, big);
      await Deno.writeTextFile(`${mount}/a.txt`, "hello harness");
      const lines: string[] = [];
      const sink = (l: string) => lines.push(l);
      const key = `cli-${crypto.randomUUID().slice(0, 6)}`;
      const env = {
        PLUGIN_BACKEND: "harness",
        PLUGIN_CACHE_SERVICE_BASE_URL: service.baseUrl,
        PLUGIN_CACHE_SERVICE_BEARER_TOKEN: TOKEN,
        PLUGIN_ACCOUNT_ID: ACCOUNT,
        PLUGIN_CACHE_TYPE: "build",
        PLUGIN_ENABLE_MULTIPART: "true",
        PLUGIN_MULTIPART_CHUNK_SIZE_MB: "2",
        PLUGIN_MOUNT: mount,
        PLUGIN_CACHE_KEY: key,
        PLUGIN_LOG_LEVEL: "debug",
        DRONE_OUTPUT: `${dir}/out.env`,
      };
      assertEquals(await run([], { ...env, PLUGIN_REBUILD: "true" }, { sink }), 0, lines.join("\n"));
      // Unified storage layout, multipart (7 MiB of random data in 2 MiB parts).
      const manifest = await s3.send(
        new GetObjectCommand({
          Bucket: swift.bucket,
          Key: service.storageKey(`${key}/${mount.replace(/^\//, "")}`, "build"),
        }),
      );
      assertStringIncludes(await manifest.Body!.transformToString(), "<Key>");
      await Deno.remove(mount, { recursive: true });
      assertEquals(await run([], { ...env, PLUGIN_RESTORE: "true" }, { sink }), 0, lines.join("\n"));
      assertEquals(await Deno.readTextFile(`${mount}/a.txt`), "hello harness");
      const back = await Deno.readFile(`${mount}/sub/big.bin`);
      assert(back.length === big.length && back.every((b, i) => b === big[i]), "restored bytes differ");
      assertStringIncludes(await Deno.readTextFile(`${dir}/out.env`), "cache_hit=true");
      // Restore keys work through list_entries: a new key misses, the prefix finds the saved one.
      await Deno.remove(mount, { recursive: true });
      await Deno.remove(`${dir}/out.env`);
      const fallback = {
        ...env,
        PLUGIN_RESTORE: "true",
        PLUGIN_CACHE_KEY: `${key}-next`,
        PLUGIN_RESTORE_KEYS: key,
      };
      assertEquals(await run([], fallback, { sink }), 0, lines.join("\n"));
      assertEquals(await Deno.readTextFile(`${mount}/a.txt`), "hello harness");
      assertStringIncludes(await Deno.readTextFile(`${dir}/out.env`), `cache_key_matched=${key}\n`);
      // Flush: the dry run lists the object; a real flush says the service cannot delete.
      const before = lines.length;
      assertEquals(await run([], { ...env, PLUGIN_FLUSH: "true", PLUGIN_DRY_RUN: "true" }, { sink }), 0);
      assert(
        lines.slice(before).some((l) => l.includes("would delete") && l.includes(key)),
        lines.join("\n"),
      );
      await run([], { ...env, PLUGIN_FLUSH: "true" }, { sink });
      assert(lines.slice(before).some((l) => l.includes("offers no delete")), lines.join("\n"));
      assert(lines.join("\n").includes("harness"), "no harness log line");
      assert(!lines.join("\n").includes(TOKEN), "the token was logged");
      assert(!lines.join("\n").includes("X-Amz-Signature"), "a pre-signed URL was logged");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "harness: stop the test servers",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    if (!started) return;
    const { swift, service, s3 } = await started;
    s3.destroy();
    await service.stop();
    await swift.stop();
    swiftDir = undefined;
  },
});
