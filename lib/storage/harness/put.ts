/**
 * PUT to a pre-signed URL with a Content-Length, through node:http (this
 * edge only). A pre-signed PUT needs the length up front, and `fetch` keeps
 * a copy of every `Uint8Array` body until a late garbage collection (parts
 * of 16 MiB piled up to the whole archive in RSS), while node:http writes
 * 1 MiB views of the caller's buffer, so a save holds only its part buffers.
 *
 * @module
 */
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { parseRetryAfter } from "../transfer/retry.ts";

const WRITE = 1024 * 1024;

/** What the storage answered. */
export interface PutAnswer {
  status: number;
  /** Headers, lower-case names (first value). */
  headers: Record<string, string>;
  /** The first 4 KiB of the body. */
  text: string;
  retryAfterMs?: number;
}

/**
 * PUTs `body` (bytes, or the path of a file of `size` bytes) to `url`.
 * `touch` is called on progress (for the idle timeout); `signal` aborts.
 *
 * @example
 * ```ts
 * const answer = await httpPut(url, bytes, bytes.length, signal, () => {});
 * answer.headers.etag;
 * ```
 */
export function httpPut(
  url: string,
  body: Uint8Array | { path: string },
  size: number,
  signal: AbortSignal,
  touch: () => void,
): Promise<PutAnswer> {
  return new Promise((resolve, reject) => {
    signal.throwIfAborted();
    const u = new URL(url);
    const send = u.protocol === "https:" ? httpsRequest : httpRequest;
    const onAbort = () => req.destroy(signal.reason);
    const req = send(u, { method: "PUT", headers: { "content-length": String(size) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        touch();
        if (text.length < 4096) text += c;
      });
      res.on("end", () => {
        signal.removeEventListener("abort", onAbort);
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(res.headers)) {
          if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v[0] : String(v);
        }
        resolve({
          status: res.statusCode ?? 0,
          headers,
          text: text.slice(0, 4096),
          retryAfterMs: parseRetryAfter(headers["retry-after"]),
        });
      });
      res.on("error", reject);
    });
    signal.addEventListener("abort", onAbort, { once: true });
    req.on("error", (err) => {
      signal.removeEventListener("abort", onAbort);
      reject(signal.aborted ? signal.reason : err);
    });
    const write = async (chunk: Uint8Array) => {
      touch();
      if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
    };
    (async () => {
      if (body instanceof Uint8Array) {
        for (let off = 0; off < body.length; off += WRITE) await write(body.subarray(off, off + WRITE));
        req.end();
        return;
      }
      const file = await Deno.open(body.path);
      try {
        for (;;) {
          const buf = new Uint8Array(WRITE);
          const n = await file.read(buf);
          if (n === null) break;
          await write(buf.subarray(0, n));
        }
        req.end();
      } finally {
        file.close();
      }
    })().catch((err) => req.destroy(err as Error));
  });
}
