/**
 * A fault-injecting TCP proxy for the tests, between a client and any real
 * test server (Swift, Azurite, the GCS emulator) on 127.0.0.1.
 *
 * Bytes pass untouched except one header: `Connection: close` is put into
 * every request head, so each connection carries exactly one request and a
 * fault chosen for a connection hits exactly that request (signatures
 * survive: SigV4, Shared Key and bearer tokens do not cover `Connection`).
 * For each request, `decide` sees its method, path and headers and picks a
 * {@link Fault}:
 *
 * - `stall` at byte N of the request (the proxy stops reading: the client's
 *   writes block) or of the response (the bytes stop; the connection stays
 *   open);
 * - `trickle`: the response arrives in small pieces with pauses below the
 *   idle threshold (the transfer must go on, only slower);
 * - `reset`: the connection is closed at byte N of the request or response;
 * - `halfclose`: the response side is shut (FIN) at byte N while the proxy
 *   keeps the request side open;
 * - `status`: an HTTP 500/503/429 answer (with `Retry-After` when given)
 *   instead of forwarding;
 * - `truncate`: the response head (with its correct `Content-Length`) and N
 *   body bytes, then the connection closes.
 *
 * DNS failure needs no proxy: point the client at {@link UNRESOLVABLE_HOST}.
 * A TLS handshake that never completes: point the client at the `https://`
 * URL of {@link startTlsStall}.
 *
 * {@link startTcpFaultProxy} is the raw-TCP mode for protocols that are not
 * HTTP (SSH/SFTP): it parses nothing, counts bytes on the raw stream of each
 * connection and applies the faults that make sense there
 * ({@link TCP_FAULT_KINDS}: stall, trickle, reset, half-close). A status
 * answer or a truncated HTTP body has no meaning on a raw stream.
 *
 * @module
 */

/** A host name that never resolves (`.invalid` is reserved, RFC 2606). */
export const UNRESOLVABLE_HOST = "cicache-no-such-host.invalid";

/** Which way the bytes flow. */
export type Direction = "request" | "response";

/** What the proxy does with one request. */
export type Fault =
  | { kind: "pass" }
  | { kind: "stall"; direction: Direction; atByte: number }
  | { kind: "trickle"; bytes: number; pieceBytes: number; pauseMs: number }
  | { kind: "reset"; direction: Direction; atByte: number }
  | { kind: "halfclose"; atByte: number }
  | { kind: "status"; status: 500 | 503 | 429; retryAfterSeconds?: number }
  | { kind: "truncate"; atByte: number };

/** A request as the proxy sees it (its head only). */
export interface ProxiedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  /** 0-based count of requests this proxy has seen. */
  index: number;
  /** In keep-alive mode: this request came on a connection that carried one before (from the pool). */
  reused?: boolean;
}

/** One request as the proxy handled it. */
export interface ProxyLogEntry {
  method: string;
  path: string;
  fault: Fault["kind"];
  /** ms after the proxy started: the request head arrived, and the connection ended. */
  at: number;
  end?: number;
  /** Request bytes (head included) forwarded to the server, response bytes forwarded to the client. */
  up: number;
  down: number;
}

/** A running proxy. */
export interface FaultProxy {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  port: number;
  /** Every request seen with the fault applied, and what went through (for a failing run's message). */
  log: ProxyLogEntry[];
  /** Bytes forwarded so far, client → server (`request`) and back (`response`), over all connections. */
  bytes: { request: number; response: number };
  /** Open client connections (should drop to 0 after a run: nothing left hanging). */
  open(): number;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function indexOfHeadEnd(buf: Uint8Array): number {
  for (let i = 3; i < buf.length; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function parseHead(text: string): { method: string; path: string; headers: Record<string, string> } {
  const [first, ...lines] = text.split("\r\n");
  const [method, path] = first.split(" ");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { method, path, headers };
}

/** The request head with `Connection: close` instead of whatever the client asked. */
function closeHead(text: string): Uint8Array {
  const lines = text.split("\r\n").filter((l) => l !== "" && !/^connection\s*:/i.test(l));
  return encoder.encode(lines.join("\r\n") + "\r\nConnection: close\r\n\r\n");
}

/**
 * Writes all of `bytes`. `Deno.Conn.write` may take only part of a buffer (when the socket's send buffer is
 * nearly full, e.g. a busy server reading slowly); the rest must be written again, or the peer waits forever
 * for bytes that were silently dropped.
 */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** What an {@link startEditingProxy} does with one chunk: the bytes to send on, or null to drop it. */
export type ChunkEdit = (chunk: Uint8Array) => Uint8Array | null;

/**
 * A bare TCP proxy to `targetPort` on 127.0.0.1 that passes each chunk of a
 * connection through that connection's edits (request: client → server,
 * response: server → client), for a test that needs one odd server behaviour
 * the fault proxies do not model (a server that ignores `Range`, a stall
 * chosen by the request's head). `connection` is called once per accepted
 * connection, so its edits can keep per-connection state. Every byte an edit
 * returns is written in full ({@link writeAll}).
 *
 * @example
 * ```ts
 * const proxy = startEditingProxy(port, () => ({ request: (b) => stripRangeHeaders(b) }));
 * // point the client at 127.0.0.1:proxy.port
 * proxy.close();
 * ```
 */
export function startEditingProxy(
  targetPort: number,
  connection: () => { request?: ChunkEdit; response?: ChunkEdit },
): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn, edit: ChunkEdit = (b) => b) => {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buf).catch(() => null);
      if (n === null) break;
      const out = edit(buf.subarray(0, n));
      if (out !== null && out.length > 0) await writeAll(to, out).catch(() => {});
    }
    try {
      to.close();
    } catch { /* closed */ }
  };
  (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      conns.push(client, server);
      const edits = connection();
      pump(client, server, edits.request);
      pump(server, client, edits.response);
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The connection bookkeeping both proxy modes share: the listener, open connections, log and counters. */
interface ProxyState {
  listener: Deno.Listener;
  port: number;
  conns: Set<Deno.Conn>;
  log: ProxyLogEntry[];
  bytes: { request: number; response: number };
  /** The next request's (HTTP) or connection's (raw TCP) 0-based number. */
  next(): number;
  /** ms since the proxy started. */
  now(): number;
  /** Closes `c` (already closed is fine) and forgets it. */
  closeQuietly(c: Deno.Conn): void;
  /** Connects to the real server and tracks the connection. */
  connect(targetPort: number): Promise<Deno.Conn>;
}

function proxyState(): ProxyState {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let index = 0;
  const t0 = performance.now();
  return {
    listener,
    port: (listener.addr as Deno.NetAddr).port,
    conns,
    log: [],
    bytes: { request: 0, response: 0 },
    next: () => index++,
    now: () => Math.round(performance.now() - t0),
    closeQuietly(c) {
      try {
        c.close();
      } catch { /* closed */ }
      conns.delete(c);
    },
    async connect(targetPort) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      conns.add(server);
      return server;
    },
  };
}

/** Accepts connections into `handle` (tracked from the start) and returns the running proxy. */
function serve(
  state: ProxyState,
  scheme: "http" | "tcp",
  handle: (c: Deno.Conn) => Promise<void>,
): FaultProxy {
  (async () => {
    for await (const conn of state.listener) {
      state.conns.add(conn);
      handle(conn).catch(() => {});
    }
  })().catch(() => {});
  return {
    url: `${scheme}://127.0.0.1:${state.port}`,
    port: state.port,
    log: state.log,
    bytes: state.bytes,
    open: () => state.conns.size,
    close() {
      try {
        state.listener.close();
      } catch { /* closed */ }
      for (const c of [...state.conns]) state.closeQuietly(c);
      return Promise.resolve();
    },
  };
}

/**
 * Starts a fault proxy in front of `127.0.0.1:<targetPort>`.
 *
 * @example
 * ```ts
 * const proxy = startFaultProxy(swiftPort, (r) => r.method === "GET" ? { kind: "truncate", atByte: 1000 } : { kind: "pass" });
 * // point the client at proxy.url
 * await proxy.close();
 * ```
 */
export function startFaultProxy(
  targetPort: number,
  decide: (req: ProxiedRequest) => Fault,
  options: { keepAlive?: boolean } = {},
): FaultProxy {
  const state = proxyState();
  const { log, bytes, now, closeQuietly } = state;

  const handle = async (client: Deno.Conn) => {
    let server: Deno.Conn | undefined;
    let entry: ProxyLogEntry | undefined;
    try {
      // Read the request head.
      let head: Uint8Array = new Uint8Array(0);
      const buf = new Uint8Array(64 * 1024);
      let end = -1;
      while (end < 0) {
        const n = await client.read(buf);
        if (n === null) return;
        head = concat(head, buf.subarray(0, n));
        end = indexOfHeadEnd(head);
        if (head.length > 256 * 1024) return;
      }
      const headText = decoder.decode(head.subarray(0, end - 4));
      const parsed = parseHead(headText);
      const fault = decide({ ...parsed, index: state.next() });
      entry = { method: parsed.method, path: parsed.path, fault: fault.kind, at: now(), up: 0, down: 0 };
      log.push(entry);
      const rest = head.subarray(end);

      if (fault.kind === "status") {
        // Drain the announced body (so the client reads our answer, not a broken pipe), then answer; a
        // client that sent `Expect: 100-continue` holds its body back for our answer, and gets it at once
        // (as a real server answers an error: RFC 9110 §10.1.1).
        const expectsContinue = /100-continue/i.test(parsed.headers["expect"] ?? "");
        let left = expectsContinue ? 0 : Number(parsed.headers["content-length"] ?? 0) - rest.length;
        while (left > 0) {
          const n = await client.read(buf);
          if (n === null) break;
          left -= n;
        }
        const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${
          fault.status === 429 ? "SlowDown" : "ServiceUnavailable"
        }</Code><Message>injected ${fault.status}</Message></Error>`;
        const extra = fault.retryAfterSeconds !== undefined
          ? `Retry-After: ${fault.retryAfterSeconds}\r\n`
          : "";
        await writeAll(
          client,
          encoder.encode(
            `HTTP/1.1 ${fault.status} Injected\r\nContent-Type: application/xml\r\nContent-Length: ${body.length}\r\n` +
              `${extra}Connection: close\r\n\r\n${body}`,
          ),
        );
        return;
      }

      server = await state.connect(targetPort);
      const upstream = server;
      const requestBytes = concat(closeHead(headText), rest);
      const e = entry;

      // client → server
      const up = (async () => {
        let sent = 0;
        const forward = async (chunk: Uint8Array): Promise<boolean> => {
          if ((fault.kind === "stall" || fault.kind === "reset") && fault.direction === "request") {
            if (sent + chunk.length >= fault.atByte) {
              await writeAll(upstream, chunk.subarray(0, Math.max(0, fault.atByte - sent)));
              sent = fault.atByte;
              e.up = sent;
              if (fault.kind === "reset") {
                closeQuietly(client);
                closeQuietly(upstream);
              }
              return false; // stall: stop reading from the client, its writes block
            }
          }
          await writeAll(upstream, chunk);
          sent += chunk.length;
          bytes.request += chunk.length;
          e.up = sent;
          return true;
        };
        if (!(await forward(requestBytes))) return;
        for (;;) {
          const n = await client.read(buf);
          if (n === null) break;
          if (!(await forward(buf.slice(0, n)))) return;
        }
        // The client went away (a client never half-closes after its request): drop both sides.
        closeQuietly(client);
        closeQuietly(upstream);
      })().catch(() => {});

      // server → client
      const down = (async () => {
        const rbuf = new Uint8Array(64 * 1024);
        let passed = 0;
        let bodyStart = -1;
        let headBytes: Uint8Array = new Uint8Array(0);
        for (;;) {
          const n = await upstream.read(rbuf);
          if (n === null) break;
          let chunk = rbuf.slice(0, n);
          if (bodyStart < 0) {
            headBytes = concat(headBytes, chunk);
            const e = indexOfHeadEnd(headBytes);
            if (e >= 0) bodyStart = e;
          }
          if (
            fault.kind === "truncate" && bodyStart >= 0 && passed + chunk.length >= bodyStart + fault.atByte
          ) {
            await writeAll(client, chunk.subarray(0, bodyStart + fault.atByte - passed));
            closeQuietly(client);
            closeQuietly(upstream);
            return;
          }
          if (
            (fault.kind === "stall" || fault.kind === "reset" || fault.kind === "halfclose") &&
            (fault.kind === "halfclose" || fault.direction === "response") &&
            passed + chunk.length >= fault.atByte
          ) {
            await writeAll(client, chunk.subarray(0, Math.max(0, fault.atByte - passed)));
            if (fault.kind === "reset") {
              closeQuietly(client);
              closeQuietly(upstream);
            } else if (fault.kind === "halfclose") {
              await client.closeWrite().catch(() => {});
            }
            return; // stall: the bytes stop, the connection stays open
          }
          if (fault.kind === "trickle" && passed < fault.bytes) {
            while (chunk.length > 0 && passed < fault.bytes) {
              const piece = chunk.subarray(0, fault.pieceBytes);
              await writeAll(client, piece);
              passed += piece.length;
              chunk = chunk.subarray(piece.length);
              await sleep(fault.pauseMs);
            }
            if (chunk.length === 0) continue;
          }
          await writeAll(client, chunk);
          passed += chunk.length;
          bytes.response += chunk.length;
          entry!.down = passed;
        }
        closeQuietly(client);
      })().catch(() => {});
      await Promise.all([up, down]);
      e.end = now();
    } catch {
      // a connection the client dropped
    } finally {
      closeQuietly(client);
      if (server) closeQuietly(server);
    }
  };

  /**
   * Keep-alive mode: the connection is kept as the client asked, so the client pools it and sends more
   * requests on it. Request heads are found by their `Content-Length`; each is decided as it arrives (with
   * `reused` set from the second on). Only `pass` and a request `stall` (the proxy stops forwarding: no
   * response ever comes) apply here; a chunked request body ends the parsing (the rest passes).
   */
  const handleKeepAlive = async (client: Deno.Conn) => {
    let server: Deno.Conn | undefined;
    try {
      server = await state.connect(targetPort);
      const upstream = server;
      const down = (async () => {
        const rbuf = new Uint8Array(64 * 1024);
        for (;;) {
          const n = await upstream.read(rbuf);
          if (n === null) break;
          await writeAll(client, rbuf.subarray(0, n));
        }
      })().catch(() => {}).finally(() => closeQuietly(client));
      const buf = new Uint8Array(64 * 1024);
      let pending: Uint8Array = new Uint8Array(0);
      let bodyLeft = 0;
      let parsing = true;
      let onConn = 0;
      for (;;) {
        if (pending.length === 0) {
          const n = await client.read(buf);
          if (n === null) break;
          pending = buf.slice(0, n);
        }
        if (!parsing || bodyLeft > 0) {
          const take = parsing ? Math.min(bodyLeft, pending.length) : pending.length;
          await writeAll(upstream, pending.subarray(0, take));
          if (parsing) bodyLeft -= take;
          pending = pending.subarray(take);
          continue;
        }
        let end = indexOfHeadEnd(pending);
        while (end < 0) {
          const n = await client.read(buf);
          if (n === null) return;
          pending = concat(pending, buf.subarray(0, n));
          end = indexOfHeadEnd(pending);
        }
        const headText = decoder.decode(pending.subarray(0, end - 4));
        const parsed = parseHead(headText);
        const fault = decide({ ...parsed, index: state.next(), reused: onConn++ > 0 });
        log.push({ method: parsed.method, path: parsed.path, fault: fault.kind, at: now(), up: 0, down: 0 });
        if (fault.kind === "stall") return void (await down); // nothing more goes either way
        if (fault.kind !== "pass") {
          throw new Error(`keep-alive mode applies pass and stall, not ${fault.kind}`);
        }
        if (/chunked/i.test(parsed.headers["transfer-encoding"] ?? "")) parsing = false;
        bodyLeft = Number(parsed.headers["content-length"] ?? 0);
        await writeAll(upstream, pending.subarray(0, end));
        pending = pending.subarray(end);
      }
    } catch {
      // a connection the client dropped
    } finally {
      closeQuietly(client);
      if (server) closeQuietly(server);
    }
  };

  return serve(state, "http", options.keepAlive ? handleKeepAlive : handle);
}

/** The fault kinds a raw TCP stream can carry (the others answer or cut HTTP messages). */
export const TCP_FAULT_KINDS: readonly Fault["kind"][] = ["pass", "stall", "trickle", "reset", "halfclose"];

/**
 * Starts a raw-TCP fault proxy in front of `127.0.0.1:<targetPort>`: no
 * HTTP parsing; `decide` picks the fault of each connection (`method` is
 * `"TCP"`, `path` the connection's number), and byte offsets count from the
 * first byte of that connection in the fault's direction (the SSH banner and
 * key exchange included). `status` and `truncate` are refused (see
 * {@link TCP_FAULT_KINDS}).
 *
 * @example
 * ```ts
 * const proxy = startTcpFaultProxy(sshdPort, (c) => c.index === 0 ? { kind: "reset", direction: "request", atByte: 50_000 } : { kind: "pass" });
 * // connect the SSH client to 127.0.0.1:proxy.port
 * await proxy.close();
 * ```
 */
export function startTcpFaultProxy(targetPort: number, decide: (conn: ProxiedRequest) => Fault): FaultProxy {
  const state = proxyState();
  const { log, bytes, now, closeQuietly } = state;

  const handle = async (client: Deno.Conn) => {
    const n = state.next();
    const fault = decide({ method: "TCP", path: `connection ${n}`, headers: {}, index: n });
    if (!TCP_FAULT_KINDS.includes(fault.kind)) {
      closeQuietly(client);
      throw new Error(`a raw TCP proxy cannot apply a ${fault.kind} fault`);
    }
    const entry: ProxyLogEntry = {
      method: "TCP",
      path: `connection ${n}`,
      fault: fault.kind,
      at: now(),
      up: 0,
      down: 0,
    };
    log.push(entry);
    let server: Deno.Conn | undefined;
    try {
      server = await state.connect(targetPort);
      const upstream = server;
      const dropBoth = () => {
        closeQuietly(client);
        closeQuietly(upstream);
      };
      // Copies `from` → `to`, counting bytes; the fault (if it is this direction's) fires at its byte.
      const pump = async (from: Deno.Conn, to: Deno.Conn, direction: Direction) => {
        const buf = new Uint8Array(64 * 1024);
        let passed = 0;
        const cut = (fault.kind === "stall" || fault.kind === "reset") && fault.direction === direction
          ? fault.atByte
          : fault.kind === "halfclose" && direction === "response"
          ? fault.atByte
          : Infinity;
        for (;;) {
          const got = await from.read(buf);
          if (got === null) break;
          let chunk = buf.subarray(0, got);
          if (passed + chunk.length >= cut) {
            await writeAll(to, chunk.subarray(0, Math.max(0, cut - passed)));
            if (fault.kind === "reset") dropBoth();
            else if (fault.kind === "halfclose") await client.closeWrite().catch(() => {});
            return; // stall: stop reading (request: the client's writes block; response: the bytes stop)
          }
          if (fault.kind === "trickle" && direction === "response") {
            while (chunk.length > 0 && passed < fault.bytes) {
              const piece = chunk.subarray(0, fault.pieceBytes);
              await writeAll(to, piece);
              passed += piece.length;
              chunk = chunk.subarray(piece.length);
              await sleep(fault.pauseMs);
            }
          }
          await writeAll(to, chunk);
          passed += chunk.length;
          bytes[direction] += chunk.length;
          if (direction === "request") entry.up = passed;
          else entry.down = passed;
        }
        dropBoth(); // one side went away: drop both (SSH never half-closes a live session)
      };
      await Promise.all([
        pump(client, upstream, "request").catch(() => {}),
        pump(upstream, client, "response").catch(() => {}),
      ]);
    } catch {
      // a connection the client dropped
    } finally {
      entry.end = now();
      closeQuietly(client);
      if (server) closeQuietly(server);
    }
  };

  return serve(state, "tcp", handle);
}

/** A listener that takes TLS connections and never completes a handshake. */
export interface TlsStall {
  /** `https://127.0.0.1:<port>`. */
  url: string;
  /** Connections accepted so far (each one a client attempt). */
  accepted(): number;
  close(): Promise<void>;
}

/**
 * The first bytes of a TLS 1.2 ServerHello: a handshake record announcing 122 bytes, of which only the
 * record header, the message header and the version arrive.
 */
const HALF_SERVER_HELLO = new Uint8Array([0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76, 0x03, 0x03]);

/**
 * Starts a TCP listener for an `https://` endpoint whose TLS handshake stalls: `silent` reads the
 * ClientHello and never answers; `half` answers the first bytes of a ServerHello and stops. Connections stay
 * open until the client gives up (or {@link TlsStall.close}).
 *
 * @example
 * ```ts
 * const tls = startTlsStall("silent");
 * // point the client at tls.url: its requests must fail within the idle timeout × attempts
 * await tls.close();
 * ```
 */
export function startTlsStall(mode: "silent" | "half"): TlsStall {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  let accepted = 0;
  const hold = async (conn: Deno.Conn) => {
    conns.add(conn);
    try {
      const buf = new Uint8Array(16 * 1024);
      let answered = false;
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        if (mode === "half" && !answered) {
          answered = true;
          await writeAll(conn, HALF_SERVER_HELLO);
        }
      }
    } catch {
      // the client gave up
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  (async () => {
    for await (const conn of listener) {
      accepted++;
      hold(conn);
    }
  })().catch(() => {});
  return {
    url: `https://127.0.0.1:${port}`,
    accepted: () => accepted,
    close() {
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of [...conns]) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
      return Promise.resolve();
    },
  };
}
