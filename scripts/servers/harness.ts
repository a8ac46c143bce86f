/**
 * Test-only Harness cache service (the real one cannot run here), speaking
 * the wire protocol of A§5.6 in front of the Swift S3 server
 * (scripts/servers/swift.ts): it hands out real SigV4 pre-signed URLs, so
 * the data path is a real S3 implementation checking signatures and expiry.
 *
 * - `GET /cache/{intel|unified}/{upload|download|exists|list_entries}` with
 *   `accountId`, `cacheKey` (or `cacheKeyPrefix`), `cacheType` (unified),
 *   the multipart parameters and `backend=` last; the token must come as
 *   `X-Harness-Token` (401 otherwise), the account must match (403).
 * - URL endpoints answer the pre-signed URL as plain text: `upload` a PUT
 *   URL, `download` a GET URL, `exists` a HEAD URL. Multipart: `uploads=`
 *   (initiate) answers a URL on this service whose PUT returns
 *   `X-Upload-Id`; `partNumber`+`uploadId` a PUT URL for the part's `key`;
 *   `uploadId` alone (complete) a PUT URL for the manifest under `cacheKey`.
 * - `list_entries` answers `[{Path, Size, LastModified}]`: legacy paths are
 *   full storage paths `<accountId>/intel/<key>` (as the real service),
 *   unified ones are keys.
 * - Objects live in the bucket under `<accountId>/intel/<key>` (legacy) or
 *   `<accountId>/<cacheType>/<key>` (unified).
 * - Test hooks: {@link HarnessService.expireNext} issues already-expired URLs,
 *   {@link HarnessService.failNext} answers service calls with an error
 *   status; {@link HarnessService.requests} records every request line.
 *
 * @module
 */
import { createHash, createHmac } from "node:crypto";
import { ListObjectsV2Command, S3Client } from "../../lib/deps/aws_client_s3.ts";
import type { SwiftServer } from "./swift.ts";

/** Options of {@link startHarnessService}. */
export interface HarnessServiceOptions {
  swift: SwiftServer;
  /** The token `X-Harness-Token` must carry. */
  token: string;
  /** The account id the service accepts. */
  accountId: string;
  /** Lifetime of issued URLs in seconds (default 900). */
  urlTtlSeconds?: number;
  /**
   * The storage address put into pre-signed URLs, asked per URL (default: Swift's endpoint). The fault
   * table gives a fault proxy in front of Swift here, so the data path runs through it; the URLs are signed
   * for that host, which the proxy passes on unchanged.
   */
  dataEndpoint?: () => string;
}

/** A running test service. */
export interface HarnessService {
  /** `http://127.0.0.1:<port>`: PLUGIN_CACHE_SERVICE_BASE_URL. */
  baseUrl: string;
  /** Every request as `METHOD path?query`, in arrival order. */
  requests: string[];
  /** The tokens received (to check the header name and value). */
  tokens: (string | null)[];
  /** The next `n` pre-signed URLs are issued already expired. */
  expireNext(n: number): void;
  /** The next `n` service calls answer `status`. */
  failNext(n: number, status: number): void;
  /** The bucket key of a cache key. */
  storageKey(key: string, cacheType?: string): string;
  stop(): Promise<void>;
}

const enc = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

/**
 * A SigV4 query-string pre-signed URL (path style) for the Swift s3api.
 *
 * @example
 * ```ts
 * presignUrl({ endpoint, region: "us-east-1", accessKey, secretKey, bucket: "b", key: "k", method: "GET", expires: 900 });
 * ```
 */
export function presignUrl(o: {
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
  bucket: string;
  key: string;
  method: string;
  expires: number;
  now?: Date;
}): string {
  const now = o.now ?? new Date();
  const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  const scope = `${day}/${o.region}/s3/aws4_request`;
  const host = new URL(o.endpoint).host;
  const path = `/${enc(o.bucket)}/${o.key.split("/").map(enc).join("/")}`;
  const params: [string, string][] = [
    ["X-Amz-Algorithm", "AWS4-HMAC-SHA256"],
    ["X-Amz-Credential", `${o.accessKey}/${scope}`],
    ["X-Amz-Date", amzDate],
    ["X-Amz-Expires", String(o.expires)],
    ["X-Amz-SignedHeaders", "host"],
  ];
  const query = params.map(([k, v]) => [enc(k), enc(v)]).sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`).join("&");
  const canonical = [o.method, path, query, `host:${host}\n`, "host", "UNSIGNED-PAYLOAD"].join("\n");
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, createHash("sha256").update(canonical).digest("hex")]
    .join("\n");
  let key: Uint8Array = new TextEncoder().encode(`AWS4${o.secretKey}`);
  for (const part of [day, o.region, "s3", "aws4_request"]) {
    key = createHmac("sha256", key).update(part).digest();
  }
  const signature = createHmac("sha256", key).update(toSign).digest("hex");
  return `${o.endpoint}${path}?${query}&X-Amz-Signature=${signature}`;
}

/**
 * Starts the test cache service in front of a running Swift.
 *
 * @example
 * ```ts
 * const swift = await startSwift();
 * const service = await startHarnessService({ swift, token: "t0ken", accountId: "acct" });
 * ```
 */
export function startHarnessService(options: HarnessServiceOptions): Promise<HarnessService> {
  const { swift, token, accountId } = options;
  const ttl = options.urlTtlSeconds ?? 900;
  const s3 = new S3Client({
    region: swift.region,
    endpoint: swift.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: swift.accessKey, secretAccessKey: swift.secretKey },
  });
  const requests: string[] = [];
  const tokens: (string | null)[] = [];
  let expire = 0;
  let fail = { n: 0, status: 500 };
  const uploads = new Set<string>();
  const storageKey = (key: string, cacheType = "") =>
    cacheType === "" ? `${accountId}/intel/${key}` : `${accountId}/${cacheType}/${key}`;
  const sign = (key: string, method: string) => {
    const expired = expire > 0;
    if (expired) expire--;
    return presignUrl({
      endpoint: options.dataEndpoint?.() ?? swift.endpoint,
      region: swift.region,
      accessKey: swift.accessKey,
      secretKey: swift.secretKey,
      bucket: swift.bucket,
      key,
      method,
      expires: expired ? 1 : ttl,
      now: expired ? new Date(Date.now() - 3600_000) : undefined,
    });
  };

  let base = "";
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    requests.push(`${req.method} ${url.pathname}${url.search}`);
    const initiate = url.pathname.match(/^\/_multipart\/initiate\/([0-9a-f-]+)$/);
    if (initiate && req.method === "PUT") {
      await req.body?.cancel();
      if (!uploads.has(initiate[1])) return new Response("unknown upload", { status: 404 });
      return new Response(null, { status: 200, headers: { "X-Upload-Id": initiate[1] } });
    }
    const m = url.pathname.match(/^\/cache\/(intel|unified)\/(upload|download|exists|list_entries)$/);
    if (!m || req.method !== "GET") return new Response("not found", { status: 404 });
    tokens.push(req.headers.get("x-harness-token"));
    if (fail.n > 0) {
      fail.n--;
      return new Response("injected failure", { status: fail.status });
    }
    if (req.headers.get("x-harness-token") !== token) return new Response("invalid token", { status: 401 });
    const q = url.searchParams;
    if (q.get("accountId") !== accountId) return new Response("account not allowed", { status: 403 });
    const names = [...q.keys()];
    if (names[names.length - 1] !== "backend" || !["s3", "gcs"].includes(q.get("backend")!)) {
      return new Response("backend must be the last parameter, s3 or gcs", { status: 400 });
    }
    const [, mode, op] = m;
    const cacheType = q.get("cacheType") ?? "";
    if ((mode === "unified") !== (cacheType !== "")) {
      return new Response("cacheType goes with the unified endpoints only", { status: 400 });
    }
    if (op === "list_entries") {
      const prefix = q.get("cacheKeyPrefix");
      if (prefix === null) return new Response("cacheKeyPrefix missing", { status: 400 });
      const rows: { Path: string; Size: number; LastModified: string }[] = [];
      const full = storageKey(prefix, cacheType);
      const strip = mode === "unified" ? storageKey("", cacheType).length : 0;
      let token: string | undefined;
      do {
        const page = await s3.send(
          new ListObjectsV2Command({
            Bucket: swift.bucket,
            Prefix: full,
            ContinuationToken: token,
            MaxKeys: 9,
          }),
        );
        for (const o of page.Contents ?? []) {
          rows.push({
            Path: o.Key!.slice(strip),
            Size: Number(o.Size ?? 0),
            LastModified: (o.LastModified ?? new Date(0)).toISOString(),
          });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return Response.json(rows);
    }
    const cacheKey = q.get("cacheKey");
    if (cacheKey === null || cacheKey === "") return new Response("cacheKey missing", { status: 400 });
    if (op === "download") return new Response(sign(storageKey(cacheKey, cacheType), "GET"));
    if (op === "exists") return new Response(sign(storageKey(cacheKey, cacheType), "HEAD"));
    if (q.has("uploads")) {
      const id = crypto.randomUUID();
      uploads.add(id);
      return new Response(`${base}/_multipart/initiate/${id}`);
    }
    const uploadId = q.get("uploadId");
    if (uploadId !== null && !uploads.has(uploadId)) return new Response("unknown uploadId", { status: 400 });
    if (q.has("partNumber")) {
      const part = q.get("key");
      if (!part || uploadId === null || part !== cacheKey) {
        return new Response("a part needs key=<cacheKey>, partNumber and uploadId", { status: 400 });
      }
    }
    return new Response(sign(storageKey(cacheKey, cacheType), "PUT"));
  };

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
    }, handler);
    base = `http://127.0.0.1:${server.addr.port}`;
    resolve({
      baseUrl: base,
      requests,
      tokens,
      expireNext(n) {
        expire = n;
      },
      failNext(n, status) {
        fail = { n, status };
      },
      storageKey,
      async stop() {
        await server.shutdown();
        s3.destroy();
      },
    });
  });
}

if (import.meta.main) {
  const { startSwift } = await import("./swift.ts");
  const swift = await startSwift();
  const service = await startHarnessService({ swift, token: "test-token", accountId: "acct" });
  console.log(`export PLUGIN_BACKEND=harness`);
  console.log(`export PLUGIN_CACHE_SERVICE_BASE_URL=${service.baseUrl}`);
  console.log(`export PLUGIN_CACHE_SERVICE_BEARER_TOKEN=test-token PLUGIN_ACCOUNT_ID=acct`);
  console.log(`# Ctrl-C stops it`);
  await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
  await service.stop();
  await swift.stop();
}
