/**
 * An HTTP front for Azurite that answers, where a test asks for it, what
 * Azure Blob Storage documents for cases Azurite answers differently or
 * cannot produce: a refused key (`AuthenticationFailed`), the storage
 * firewall or a SAS that may not do this (`AuthorizationFailure`), an
 * identity without a data role (`AuthorizationPermissionMismatch`), a
 * container being deleted (`ContainerBeingDeleted`). Every other request is
 * forwarded to Azurite unchanged, so the rest of the exchange is real.
 *
 * Status, error code (body and `x-ms-error-code` header) and message are
 * Azure's, from "Blob service error codes" and "Common REST API error codes"
 * (learn.microsoft.com/rest/api/storageservices); the message carries the
 * `RequestId:`/`Time:` lines Azure appends. HEAD answers have no body, as on
 * Azure.
 *
 * @module
 */

/** Azure's documented answers, by error code. */
export const AZURE_ERRORS = {
  AuthenticationFailed: {
    status: 403,
    message:
      "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
    detail: "The MAC signature found in the HTTP request 'x' is not the same as any computed signature.",
  },
  AuthorizationFailure: { status: 403, message: "This request is not authorized to perform this operation." },
  AuthorizationPermissionMismatch: {
    status: 403,
    message: "This request is not authorized to perform this operation using this permission.",
  },
  AuthorizationSourceIPMismatch: {
    status: 403,
    message: "This request is not authorized to perform this operation using this source IP 203.0.113.7.",
  },
  ContainerBeingDeleted: { status: 409, message: "The specified container is being deleted." },
} as const;

/** An error code of {@link AZURE_ERRORS}. */
export type AzureErrorCode = keyof typeof AZURE_ERRORS;

/** One request the front saw: method, path with query, and what it answered (`forwarded` or a code). */
export interface FrontRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  answer: AzureErrorCode | "forwarded";
}

/** A running front. */
export interface AzureFront {
  /** The blob service URL through the front: `http://127.0.0.1:<port>/<account>`. */
  url: string;
  /** Every request, in order. */
  requests: FrontRequest[];
  stop(): Promise<void>;
}

/**
 * Azure's answer for `code`, as the service sends it.
 *
 * @example
 * ```ts
 * const res = azureErrorResponse("AuthorizationFailure", "GET");
 * res.status; // 403
 * ```
 */
export function azureErrorResponse(code: AzureErrorCode, method: string): Response {
  const e = AZURE_ERRORS[code];
  const requestId = crypto.randomUUID();
  const message = `${e.message}\nRequestId:${requestId}\nTime:${new Date().toISOString()}`;
  const detail = "detail" in e ? `<AuthenticationErrorDetail>${e.detail}</AuthenticationErrorDetail>` : "";
  const headers = {
    "content-type": "application/xml",
    "x-ms-error-code": code,
    "x-ms-request-id": requestId,
    "x-ms-version": "2026-10-06",
  };
  if (method === "HEAD") return new Response(null, { status: e.status, headers });
  return new Response(
    `\ufeff<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${message}</Message>${detail}</Error>`,
    { status: e.status, headers },
  );
}

/**
 * Starts a front on a free port of 127.0.0.1 before the Azurite blob service
 * at `target` (its port). `decide` picks Azure's answer for a request, or
 * `undefined` to forward it.
 *
 * @example
 * ```ts
 * const front = await startAzureFront(azurite.port, azurite.accountName, (req) =>
 *   new URL(req.url).searchParams.get("restype") === "container" && req.method === "PUT"
 *     ? "AuthorizationFailure"
 *     : undefined);
 * // use front.url as the endpoint
 * await front.stop();
 * ```
 */
export function startAzureFront(
  targetPort: number,
  accountName: string,
  decide: (req: Request, seen: readonly FrontRequest[]) => AzureErrorCode | undefined,
): Promise<AzureFront> {
  const requests: FrontRequest[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const answer = decide(req, requests);
    requests.push({
      method: req.method,
      path: url.pathname + url.search,
      query: url.searchParams,
      answer: answer ?? "forwarded",
    });
    if (answer) {
      await req.body?.cancel();
      return azureErrorResponse(answer, req.method);
    }
    const headers = new Headers(req.headers);
    headers.delete("host");
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
    const res = await fetch(`http://127.0.0.1:${targetPort}${url.pathname}${url.search}`, {
      method: req.method,
      headers,
      body,
      redirect: "manual",
    });
    return new Response(res.body, { status: res.status, headers: res.headers });
  });
  return Promise.resolve({
    url: `http://127.0.0.1:${server.addr.port}/${accountName}`,
    requests,
    stop: () => server.shutdown(),
  });
}
