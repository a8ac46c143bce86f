/**
 * Differential tests of our SigV4 signer (`lib/storage/s3/sigv4.ts`, used by
 * the s3 backend's fetch-based metadata requests) against the AWS SDK's own
 * signer (`@smithy/signature-v4`, as the S3 client configures it: path not
 * escaped twice) on the same requests, keys and date. The s3 tests then show
 * Swift accepts what it signs.
 *
 * @module
 */
import { createHash, createHmac } from "node:crypto";
import { SignatureV4 } from "../lib/deps/smithy_signature_v4.ts";
import { EMPTY_SHA256, encodeS3Key, rfc3986, signV4 } from "../lib/storage/s3/sigv4.ts";
import { assertEquals } from "./assert.ts";

/** The hash constructor the SDK's signer takes (node:crypto, as the SDK's Node build). */
class NodeSha256 {
  #h: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#h = secret === undefined ? createHash("sha256") : createHmac("sha256", bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#h.update(bytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#h.digest()));
  }
}

function bytes(d: string | ArrayBuffer | ArrayBufferView): string | Uint8Array {
  if (typeof d === "string") return d;
  if (d instanceof ArrayBuffer) return new Uint8Array(d);
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

interface Case {
  method: string;
  url: string;
  headers?: Record<string, string>;
  sessionToken?: string;
  region?: string;
}

const KEY = "key-0123/node modules+a~b/日本/(x)!*'";
const CASES: Case[] = [
  { method: "HEAD", url: "http://127.0.0.1:8080/cicache" },
  { method: "HEAD", url: `http://127.0.0.1:8080/cicache/${encodeS3Key(KEY)}` },
  {
    method: "HEAD",
    url: `https://bucket.s3.eu-west-1.amazonaws.com/${encodeS3Key(KEY)}`,
    region: "eu-west-1",
  },
  {
    method: "GET",
    url: `http://127.0.0.1:8080/cicache?list-type=2&max-keys=7&prefix=${rfc3986("a b/+c=d&e/")}` +
      `&continuation-token=${rfc3986("AbC/+==")}`,
  },
  {
    method: "GET",
    url: `http://localhost:9000/b/${encodeS3Key("k/m")}`,
    headers: { range: "bytes=0-0" },
    sessionToken: "FwoGZXIvYXdzE//session+token=",
  },
];

const CREDS = { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" };
const DATE = new Date("2026-11-29T02:30:45.123Z");

for (const c of CASES) {
  Deno.test(`sigv4: same Authorization as the SDK's signer: ${c.method} ${c.url}`, async () => {
    const url = new URL(c.url);
    const region = c.region ?? "us-east-1";
    const creds = { ...CREDS, ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}) };
    const ours = await signV4({ method: c.method, url, headers: c.headers }, creds, region, "s3", DATE);

    const sdk = new SignatureV4({
      credentials: creds,
      region,
      service: "s3",
      sha256: NodeSha256,
      uriEscapePath: false,
    });
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const signed = await sdk.sign({
      method: c.method,
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port ? Number(url.port) : undefined,
      path: url.pathname,
      query,
      headers: { host: url.host, "x-amz-content-sha256": EMPTY_SHA256, ...(c.headers ?? {}) },
    }, { signingDate: DATE });
    const theirs = Object.fromEntries(Object.entries(signed.headers).map(([k, v]) => [k.toLowerCase(), v]));
    assertEquals(ours["authorization"], theirs["authorization"]);
    assertEquals(ours["x-amz-date"], theirs["x-amz-date"]);
    assertEquals(ours["x-amz-security-token"], theirs["x-amz-security-token"]);
  });
}

Deno.test("sigv4: a different secret, date or key changes the signature", async () => {
  const url = new URL("http://127.0.0.1:8080/cicache/k");
  const base = await signV4({ method: "HEAD", url }, CREDS, "us-east-1", "s3", DATE);
  const other = [
    await signV4({ method: "HEAD", url }, { ...CREDS, secretAccessKey: "x" }, "us-east-1", "s3", DATE),
    await signV4({ method: "HEAD", url }, CREDS, "us-east-1", "s3", new Date(DATE.getTime() + 1000)),
    await signV4(
      { method: "HEAD", url: new URL("http://127.0.0.1:8080/cicache/j") },
      CREDS,
      "us-east-1",
      "s3",
      DATE,
    ),
  ];
  for (const o of other) assertEquals(o["authorization"] === base["authorization"], false);
});

Deno.test("sigv4: keys are encoded per segment, RFC 3986", () => {
  assertEquals(encodeS3Key("a b/c+d/(e)!*'~"), "a%20b/c%2Bd/%28e%29%21%2A%27~");
});
