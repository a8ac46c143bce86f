/**
 * The sftp backend's TCP connection, opened as soon as the settings are known:
 * before the SSH client (`ssh2`, ≈0.06 s of module evaluation) and the rest of
 * the backend are loaded, so the TCP handshake, the server's fork and its
 * banner overlap that loading instead of following it. The socket is a plain
 * `node:net` Socket, the one ssh2 would have made itself (it takes it as its
 * `sock` option); `node:net` is loaded by ssh2 anyway.
 *
 * Nothing is sent on the socket here: the host key is checked in
 * `connect.ts` before any credential leaves. Invalid host or port settings
 * open nothing (the backend reports them), and a socket that failed is
 * dropped, so the first connect then runs as without it and reports the
 * failure in the same words.
 *
 * @module
 */
import type { Socket } from "node:net";
import type { Settings } from "../../settings.ts";

/** A socket opened early, handed to the first connect at most once. */
export class EarlySocket {
  #socket?: Socket;
  #failed = false;

  constructor(socket: Socket, readonly host: string, readonly port: number) {
    this.#socket = socket;
    // Without a listener a refused connection would be an uncaught error; the first connect reports it.
    socket.once("error", () => (this.#failed = true));
    socket.setMaxListeners(0); // as ssh2 does with the socket it makes: it adds many
  }

  /** Whether the connection failed (refused, unreachable, DNS) before anyone took it. */
  get failed(): boolean {
    return this.#failed;
  }

  /**
   * The socket if it leads to `host:port` and is still usable (connected or still connecting); otherwise
   * undefined and the socket is dropped. Later calls return undefined: a reconnect opens its own connection.
   */
  take(host: string, port: number): Socket | undefined {
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket === undefined) return undefined;
    if (this.#failed || socket.destroyed || host !== this.host || port !== this.port) {
      socket.destroy();
      return undefined;
    }
    return socket;
  }

  /** Closes the socket if nobody took it (the backend failed before its first connect). */
  drop(): void {
    this.#socket?.destroy();
    this.#socket = undefined;
  }
}

/** The host and port the settings name, or undefined when they are not valid (the backend says why). */
export function target(settings: Settings): { host: string; port: number } | undefined {
  const host = settings.sftpHost.trim();
  const port = Number(settings.sftpPort.trim() || "22");
  if (host === "" || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host, port };
}

/**
 * Starts the TCP connection to the SFTP server the settings name. Resolves
 * once `node:net` is loaded and the connect has begun (not when it is
 * established), so the caller goes on loading the backend meanwhile.
 *
 * @example
 * ```ts
 * const early = await preconnect(settings);
 * const backend = await createSftpBackend(settings, log, early);
 * ```
 */
export async function preconnect(settings: Settings): Promise<EarlySocket | undefined> {
  const to = target(settings);
  if (to === undefined) return undefined;
  const { connect } = await import("node:net");
  return new EarlySocket(connect({ host: to.host, port: to.port }), to.host, to.port);
}
