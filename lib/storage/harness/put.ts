/**
 * PUT to a pre-signed URL with a Content-Length, through node:http (this
 * edge only; `../transfer/send_body.ts` does the sending). A pre-signed PUT
 * needs the length up front, and `fetch` keeps a copy of every `Uint8Array`
 * body until a late garbage collection (parts of 16 MiB piled up to the
 * whole archive in RSS), while node:http writes views of the caller's
 * buffer, so a save holds only its part buffers.
 *
 * @module
 */
import { parseRetryAfter } from "../transfer/retry.ts";
import { sendBody } from "../transfer/send_body.ts";

/** What the storage answered. */
export interface PutAnswer {
  status: number;
  /** Headers, lower-case names (several values joined with ", "). */
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
export async function httpPut(
  url: string,
  body: Uint8Array | { path: string },
  size: number,
  signal: AbortSignal,
  touch: () => void,
): Promise<PutAnswer> {
  const res = await sendBody(new URL(url), {
    method: "PUT",
    headers: {},
    body: body instanceof Uint8Array ? body : { path: body.path, size },
    signal,
    touch,
  });
  const text = res.body ? (await res.text()).slice(0, 4096) : "";
  const headers: Record<string, string> = {};
  for (const [k, v] of res.headers) headers[k] = v;
  return { status: res.status, headers, text, retryAfterMs: parseRetryAfter(headers["retry-after"]) };
}
