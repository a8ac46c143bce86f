// The Cloud Storage emulator of firebase-tools (the GCS JSON API), started from Node on 127.0.0.1 for the
// ci-cache tests and bench. Run by scripts/servers/gcs.ts; install first with scripts/install/gcs-emulator.sh.
//
//   node scripts/servers/gcs_emulator.mjs [port]
//
// Prints one JSON line `{"port": N}` on stdout once it answers, then serves until SIGTERM/SIGINT.
//
// What this launcher adds in front of the stock emulator, and why:
// - The Firebase rules runtime (a Java jar) is stubbed out: the GCS JSON API routes use the admin layer,
//   which never evaluates rules.
// - Chunked resumable uploads: the stock emulator finalizes the object after the first PUT to a session, so
//   a chunked upload stores only its first chunk. A small shim answers non-final chunks
//   (`Content-Range: bytes a-b/*`) the way GCS does (308 with a `Range` header), checks that they are
//   multiples of 256 KiB and start where the stored bytes end, cancels sessions on DELETE (499), and hands
//   the final chunk to the emulator, which finalizes. Single-request resumable uploads are not touched.
// - Test hooks, all optional, set by the JSON in the environment variable GCS_EMULATOR_CONFIG:
//   `{"buckets": ["b"]}`: only these buckets exist (the emulator creates any bucket on first use); others
//   get GCS's real 404 "The specified bucket does not exist." JSON error.
//   `{"deny": {"<token>": 401 | 403}}`: requests with `Authorization: Bearer <token>` get GCS's real 401
//   "Invalid Credentials" or 403 "… does not have storage.objects.… access" JSON error (the emulator checks no
//   credentials or IAM permissions).
//   GET /_test/requests returns the last requests seen (method, path, query, authorization, API key,
//   customer-supplied key hash), so tests can
//   prove which credentials reached storage; DELETE /_test/requests clears the log.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { createServer } from "node:net";
import { existsSync } from "node:fs";

const here = dirname(fileURLToPath(import.meta.url));
const installDir = process.env.GCS_EMULATOR_DIR || join(here, "..", "..", ".servers", "firebase");
if (!existsSync(join(installDir, "node_modules", "firebase-tools", "package.json"))) {
  console.error(`firebase-tools is not installed in ${installDir}: run scripts/install/gcs-emulator.sh`);
  process.exit(2);
}
const require = createRequire(join(installDir, "package.json"));
const express = require(
  require.resolve("express", { paths: [require.resolve("firebase-tools/package.json")] }),
);
const serverModule = require("firebase-tools/lib/emulator/storage/server");
const { StorageEmulator } = require("firebase-tools/lib/emulator/storage");
const { EmulatorRegistry } = require("firebase-tools/lib/emulator/registry");

const config = JSON.parse(process.env.GCS_EMULATOR_CONFIG || "{}");
const knownBuckets = config.buckets ? new Set(config.buckets) : undefined;
const deny = config.deny ?? {};
const GRANULARITY = 256 * 1024;
const MAX_CHUNK = 1024 * 1024 * 1024;
const log = [];

function gcsError(res, code, message, reason, extra = {}) {
  res.status(code).json({
    error: { code, message, errors: [{ message, domain: "global", reason, ...extra }] },
  });
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error("chunk too large"));
        req.destroy();
        return;
      }
      parts.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(parts)));
    req.on("error", reject);
    req.on("aborted", () => reject(new Error("client aborted the request")));
  });
}

/** Test hooks, bucket allow-list and token deny-list, placed before the emulator's routes. */
function testHooks(req, res, next) {
  if (req.path === "/_test/requests") {
    if (req.method === "DELETE") log.length = 0;
    return res.json(log);
  }
  const auth = req.header("authorization") ?? "";
  log.push({
    method: req.method,
    path: req.path,
    authorization: auth,
    apiKey: req.header("x-goog-api-key") ?? req.query.key ?? "",
    query: req.query,
    encryptionKeySha256: req.header("x-goog-encryption-key-sha256") ?? "",
  });
  if (log.length > 500) log.shift();
  const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
  if (token && deny[token] === 401) {
    return gcsError(res, 401, "Invalid Credentials", "authError", {
      locationType: "header",
      location: "Authorization",
    });
  }
  const bucket = /\/b\/([^/]+)/.exec(req.path)?.[1];
  if (token && deny[token] === 403) {
    const perm = req.method === "GET"
      ? (req.path.endsWith("/o") ? "list" : "get")
      : req.method === "DELETE"
      ? "delete"
      : "create";
    const who = "ci-cache-test@example-project.iam.gserviceaccount.com";
    return gcsError(
      res,
      403,
      `${who} does not have storage.objects.${perm} access to the Google Cloud Storage ${
        perm === "list" || perm === "create" ? "bucket" : "object"
      }. Permission 'storage.objects.${perm}' denied on resource (or it may not exist).`,
      "forbidden",
    );
  }
  if (knownBuckets && bucket !== undefined && !knownBuckets.has(decodeURIComponent(bucket))) {
    return gcsError(res, 404, "The specified bucket does not exist.", "notFound");
  }
  next();
}

/** GCS's chunked resumable upload protocol on top of the emulator's upload service. */
function chunkedUploads(emulator) {
  return async (req, res, next) => {
    const uploadId = req.query.upload_id?.toString();
    if (!uploadId || !req.path.startsWith("/upload/storage/v1/b/")) return next();
    const uploads = emulator.uploadService;
    if (req.method === "DELETE") {
      try {
        uploads.cancelResumableUpload(uploadId);
      } catch {
        return res.sendStatus(404);
      }
      return res.sendStatus(499);
    }
    if (req.method !== "PUT") return next();
    const range = /^bytes (\*|(\d+)-(\d+|\*))\/(\*|\d+)$/.exec(req.header("content-range") ?? "");
    if (!range || range[3] === "*") return next(); // single-request upload: the emulator's own path
    let upload;
    try {
      upload = uploads.getResumableUpload(uploadId);
    } catch {
      return res.sendStatus(404);
    }
    if (upload.status !== "active") return gcsError(res, 400, "upload is not active", "invalid");
    const total = range[4] === "*" ? undefined : Number(range[4]);
    const rangeHeader = () => (upload.size > 0 ? { Range: `bytes=0-${upload.size - 1}` } : {});
    if (range[1] === "*") {
      if (total === undefined) return res.set(rangeHeader()).sendStatus(308); // status query
      if (total !== upload.size) {
        return gcsError(res, 400, `object size ${total} != ${upload.size}`, "invalid");
      }
      req.body = Buffer.alloc(0);
      req._body = true;
      return next();
    }
    const start = Number(range[2]);
    const end = Number(range[3]);
    let body;
    try {
      body = await readBody(req, MAX_CHUNK);
    } catch {
      return; // the client went away: nothing is stored for this request
    }
    if (body.length !== end - start + 1) {
      return gcsError(
        res,
        400,
        `Content-Range ${start}-${end} does not match ${body.length} bytes`,
        "invalid",
      );
    }
    if (start !== upload.size) {
      return gcsError(res, 400, `chunk starts at ${start}, ${upload.size} bytes are stored`, "invalid");
    }
    if (total !== undefined && end + 1 === total) {
      req.body = body;
      req._body = true;
      return next(); // final chunk: the emulator appends and finalizes
    }
    if (total !== undefined) {
      return gcsError(res, 400, `chunk ends at ${end}, object size ${total}`, "invalid");
    }
    if (body.length % GRANULARITY !== 0) {
      return gcsError(
        res,
        400,
        `non-final chunk of ${body.length} bytes is not a multiple of 256 KiB`,
        "invalid",
      );
    }
    uploads.continueResumableUpload(uploadId, body);
    return res.set(rangeHeader()).sendStatus(308);
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const port = Number(process.argv[2] || 0) || await freePort();
const emulator = new StorageEmulator({
  host: "127.0.0.1",
  port,
  projectId: "ci-cache-test",
  rules: { name: "storage.rules", content: "" },
  auto_download: false,
});
const noop = { start: async () => {}, stop: async () => {} };
emulator._rulesRuntime = Object.assign(emulator._rulesRuntime, noop);
emulator._rulesManager = Object.assign(emulator._rulesManager, noop);

const createApp = serverModule.createApp;
serverModule.createApp = async (projectId, em) => {
  const inner = await createApp(projectId, em);
  const app = express();
  app.disable("x-powered-by");
  app.use(testHooks);
  app.use(chunkedUploads(em));
  app.use(inner);
  return app;
};

await EmulatorRegistry.start(emulator);
process.stdout.write(JSON.stringify({ port }) + "\n");

async function shutdown() {
  try {
    await EmulatorRegistry.stop(emulator.getName());
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
