/**
 * Differential tests of our Azure Shared Key signing (`lib/storage/azure/rest.ts`, used by the azure
 * backend's fetch-based metadata requests) against `@azure/storage-blob`'s own: the SDK builds and signs a
 * request (its HTTP client only captures it), ours signs the same method, URL and headers, and both
 * `Authorization` headers must be equal. The azure tests then show Azurite accepts what we sign.
 *
 * @module
 */
import { BlobServiceClient, StorageSharedKeyCredential } from "../lib/deps/azure_storage_blob.ts";
import { sharedKeyAuthorization } from "../lib/storage/azure/rest.ts";
import { assert, assertEquals } from "./assert.ts";

const ACCOUNT = "devstoreaccount1";
const KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

interface Captured {
  method: string;
  url: string;
  headers: Record<string, string>;
}

/** A client whose HTTP layer records the signed request and fails it (nothing goes on the wire). */
function capturingClient(url: string, seen: Captured[]) {
  return new BlobServiceClient(url, new StorageSharedKeyCredential(ACCOUNT, KEY), {
    retryOptions: { maxTries: 1 },
    httpClient: {
      sendRequest: (request) => {
        seen.push({ method: request.method, url: request.url, headers: request.headers.toJson() });
        return Promise.reject(new Error("captured"));
      },
    },
  });
}

const BLOB = "key-0123/node modules+a~b/日本/(x)!*'";
const CASES: [string, (c: BlobServiceClient) => Promise<unknown>][] = [
  ["create container (Azurite path-style URL)", (c) => c.getContainerClient("cicache").create()],
  [
    "blob properties (HEAD) of an awkward name",
    (c) => c.getContainerClient("cicache").getBlobClient(BLOB).getProperties(),
  ],
  [
    "list blobs with prefix, metadata and a marker",
    (c) =>
      c.getContainerClient("cicache").listBlobsFlat({ prefix: "a b/+c=d&e/", includeMetadata: true })
        .byPage({ maxPageSize: 7, continuationToken: "2!84!MDAwMDE=" }).next(),
  ],
  ["ranged download", (c) => c.getContainerClient("cicache").getBlobClient("k/m").download(5, 10)],
];

for (
  const url of ["http://127.0.0.1:10000/devstoreaccount1", "https://devstoreaccount1.blob.core.windows.net"]
) {
  for (const [name, call] of CASES) {
    Deno.test(`azure shared key: same Authorization as the SDK: ${name}, ${new URL(url).host}`, async () => {
      const seen: Captured[] = [];
      await call(capturingClient(url, seen)).catch(() => {});
      assert(seen.length > 0, "the SDK sent no request");
      const req = seen[0];
      const ours = await sharedKeyAuthorization(req.method, new URL(req.url), req.headers, ACCOUNT, KEY);
      const theirs = Object.entries(req.headers).find(([k]) => k.toLowerCase() === "authorization")?.[1];
      assertEquals(ours, theirs);
    });
  }
}

Deno.test("azure shared key: another key or another header changes the signature", async () => {
  const url = new URL("http://127.0.0.1:10000/devstoreaccount1/cicache/k");
  const headers = { "x-ms-date": "Sun, 29 Nov 2026 02:30:45 GMT", "x-ms-version": "2026-10-06" };
  const base = await sharedKeyAuthorization("HEAD", url, headers, ACCOUNT, KEY);
  const otherKey = await sharedKeyAuthorization("HEAD", url, headers, ACCOUNT, btoa("another key"));
  const otherDate = await sharedKeyAuthorization(
    "HEAD",
    url,
    { ...headers, "x-ms-date": "Sun, 29 Nov 2026 02:30:46 GMT" },
    ACCOUNT,
    KEY,
  );
  assert(base !== otherKey && base !== otherDate, "the signature ignored the key or the date");
});
