/**
 * Requests with a large body (upload parts, blocks, chunks, single puts) over
 * `node:http`/`node:https` instead of `fetch`, answered as a web `Response`;
 * the one place every backend sends upload bodies from.
 *
 * Why: Deno's `fetch` copies a request body and frees the copy only at a
 * later garbage collection. Four 16 MiB parts in flight, 24 in all, peaked at
 * 311 MB of RSS over `fetch` and at 62 MB over `node:http`, which also sent
 * them about three times faster (one run on this machine, a local sink).
 * So the S3 and Azure backends send every body of at least
 * {@link STREAMED_BODY_MIN} through here and keep `fetch` for small ones (a
 * small save never loads the Node HTTP modules); GCS chunks and the Harness
 * service's pre-signed PUTs (bytes, or a file streamed from disk) always
 * come here.
 *
 * The body goes out in 256 KiB slices with back-pressure; each slice the
 * socket took counts as progress for the idle timeout (`touch`), so a long
 * upload is never mistaken for a stalled one and a stalled one is caught
 * mid-body. An abort destroys the request with the signal's reason. Network
 * failures reject with the Node error (its `code`, e.g. `ECONNRESET`, is
 * what the backends' retry and error mapping read). Redirects are not
 * followed.
 *
 * @module
 */
import type { Agent as HttpAgent } from "node:http";

/** Bodies of at least this many bytes go over `node:http(s)` (one compression block). */
export const STREAMED_BODY_MIN = 4 * 2 ** 20;

/** Bytes handed to the socket per write (the granularity of progress). */
const SLICE = 256 * 1024;

/** Statuses whose answer has no body (a `Response` refuses one). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** One request of {@link sendBody}. */
export interface BodyRequest {
  method: string;
  /** Sent as given (lower-case names); `content-length` is set from the body. */
  headers: Record<string, string>;
  /** The bytes, or a file of `size` bytes read as the socket takes them. */
  body: Uint8Array | { path: string; size: number };
  /** Aborts the request (its reason is the rejection). */
  signal: AbortSignal;
  /** Called whenever bytes went out or the answer arrived. */
  touch?: () => void;
  /** Keeps connections between the requests of one upload ({@link uploadAgent}); default: a connection each. */
  agent?: UploadAgent;
}

/**
 * Connections kept alive between the requests of one upload; `close` ends
 * them. The Node modules and the agent are made on the first large body, so
 * an upload that sends none (a small save) loads nothing.
 */
export interface UploadAgent {
  agent(): Promise<HttpAgent>;
  close(): void;
}

type HttpModule = typeof import("node:http");

let modules: Promise<{ http: HttpModule; https: HttpModule }> | undefined;

function loadModules() {
  return modules ??= Promise.all([import("node:http"), import("node:https")]).then(([http, https]) => ({
    http: http.default ?? http,
    https: (https.default ?? https) as unknown as HttpModule,
  }));
}

/**
 * A keep-alive agent for the requests of one upload to `url`'s scheme
 * (made on first use); close it when the upload is over (nothing stays open
 * after it).
 *
 * @example
 * ```ts
 * const agent = uploadAgent(url);
 * try {
 *   await sendBody(url, { method: "PUT", headers, body, signal, agent });
 * } finally {
 *   agent.close();
 * }
 * ```
 */
export function uploadAgent(url: URL, maxSockets = 8): UploadAgent {
  let made: Promise<HttpAgent> | undefined;
  let closed = false;
  return {
    agent: () =>
      made ??= loadModules().then(({ http, https }) => {
        const agent = new (url.protocol === "https:" ? https : http).Agent({ keepAlive: true, maxSockets });
        if (closed) agent.destroy();
        return agent;
      }),
    close: () => {
      closed = true;
      made?.then((agent) => agent.destroy(), () => {});
    },
  };
}

/**
 * Runs `fn` (one upload's requests) with a fresh {@link uploadAgent}, closed
 * when `fn` settles.
 *
 * @example
 * ```ts
 * await withUploadAgent(url, 5, (agent) => sendBody(url, { method: "PUT", headers, body, signal, agent }));
 * ```
 */
export async function withUploadAgent<T>(
  url: URL,
  maxSockets: number,
  fn: (agent: UploadAgent) => Promise<T>,
): Promise<T> {
  const agent = uploadAgent(url, maxSockets);
  try {
    return await fn(agent);
  } finally {
    agent.close();
  }
}

/**
 * Sends `r.body` to `url` and resolves with the answer as a `Response`
 * (status, headers, body stream) once its headers arrived; any status
 * resolves (the caller decides what is an error).
 *
 * @example
 * ```ts
 * const res = await sendBody(new URL("http://127.0.0.1:9000/bucket/key"),
 *   { method: "PUT", headers: { authorization: auth }, body: part, signal: AbortSignal.timeout(60_000) });
 * if (res.status >= 300) throw new Error(await res.text());
 * ```
 */
export async function sendBody(url: URL, r: BodyRequest): Promise<Response> {
  r.signal.throwIfAborted();
  const { http, https } = await loadModules();
  const mod = url.protocol === "https:" ? https : http;
  const agent = r.agent ? await r.agent.agent() : false;
  r.signal.throwIfAborted();
  return await new Promise<Response>((resolve, reject) => {
    let settled = false;
    const size = r.body instanceof Uint8Array ? r.body.length : r.body.size;
    const req = mod.request(url, {
      method: r.method,
      headers: { ...r.headers, "content-length": String(size) },
      agent,
    });
    const onAbort = () => req.destroy(r.signal.reason ?? new Error("request aborted"));
    r.signal.addEventListener("abort", onAbort, { once: true });
    const fail = (err: unknown) => {
      r.signal.removeEventListener("abort", onAbort);
      if (settled) return;
      settled = true;
      reject(r.signal.aborted ? r.signal.reason ?? err : err);
    };
    req.on("error", fail);
    req.on("response", (res) => {
      r.touch?.();
      if (settled) return res.resume();
      settled = true;
      const headers = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        if (value === undefined) continue;
        for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
      }
      const empty = NULL_BODY.has(res.statusCode ?? 0) || r.method === "HEAD" ||
        headers.get("content-length") === "0";
      if (empty) {
        // Resolved once the answer ended, so its connection is free for the upload's next request.
        res.on("end", () => {
          r.signal.removeEventListener("abort", onAbort);
          resolve(new Response(null, { status: res.statusCode, statusText: res.statusMessage, headers }));
        });
        res.on("error", (err) => reject(r.signal.aborted ? r.signal.reason ?? err : err));
        res.resume();
        return;
      }
      let open = true; // until the stream ended, failed or its reader cancelled it
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          res.on("data", (chunk: Uint8Array) => {
            if (!open) return;
            r.touch?.();
            controller.enqueue(new Uint8Array(chunk));
            if ((controller.desiredSize ?? 1) <= 0) res.pause();
          });
          res.on("end", () => {
            r.signal.removeEventListener("abort", onAbort);
            if (open) controller.close();
            open = false;
          });
          res.on("error", (err) => {
            if (open) controller.error(r.signal.aborted ? r.signal.reason ?? err : err);
            open = false;
          });
        },
        pull() {
          res.resume();
        },
        cancel() {
          open = false;
          r.signal.removeEventListener("abort", onAbort);
          res.destroy();
        },
      }, { highWaterMark: 4 });
      resolve(new Response(body, { status: res.statusCode, statusText: res.statusMessage, headers }));
    });
    const slices = r.body instanceof Uint8Array ? bytesSlices(r.body) : fileSlices(r.body.path);
    writeSlices(req, slices, () => r.touch?.()).catch((err) => req.destroy(err as Error));
  });
}

/** The body's bytes as views of {@link SLICE} bytes (no copy). */
function* bytesSlices(body: Uint8Array): Generator<Uint8Array> {
  for (let offset = 0; offset < body.length; offset += SLICE) yield body.subarray(offset, offset + SLICE);
}

/** A file's bytes, {@link SLICE} at a time. */
async function* fileSlices(path: string): AsyncGenerator<Uint8Array> {
  using file = await Deno.open(path);
  for (;;) {
    const buf = new Uint8Array(SLICE); // a fresh buffer each: the socket may still hold the last one
    const n = await file.read(buf);
    if (n === null) return;
    yield buf.subarray(0, n);
  }
}

/** Writes `slices` into `req` with back-pressure (`touch` once the socket took each), then ends it. */
async function writeSlices(
  req: {
    write(chunk: Uint8Array, done: () => void): boolean;
    once(event: "drain", f: () => void): unknown;
    end(): void;
  },
  slices: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  touch: () => void,
): Promise<void> {
  for await (const slice of slices) {
    if (!req.write(slice, touch)) await new Promise<void>((r) => req.once("drain", r));
  }
  req.end();
}
