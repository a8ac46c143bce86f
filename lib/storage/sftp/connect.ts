/**
 * Connecting to an SFTP server: the settings checked and turned into ssh2
 * options (password or private key file, with an optional passphrase), the
 * host key verified before any credential is sent, and the SFTP channel
 * wrapped in a {@link Session} of promise-returning calls.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import { Client, parseKey } from "../../deps/ssh2.ts";
import { AuthFailedError, InvalidSettingsError, StorageError, UnavailableError } from "../backend.ts";
import type { Logger } from "../../log.ts";
import type { Settings } from "../../settings.ts";
import {
  checkHostKey,
  fingerprint,
  type HostKeyPolicy,
  keyType,
  normalizeFingerprint,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
} from "./hostkey.ts";

const KIND = "sftp";
/** Ciphers offered, best first (all supported by OpenSSH 6.5+). */
const CIPHERS = [
  "chacha20-poly1305@openssh.com",
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "aes128-ctr",
  "aes192-ctr",
  "aes256-ctr",
];

/** The SFTP file attributes ssh2 reports. */
export interface SftpAttrs {
  mode: number;
  size: number;
  mtime: number;
}

/** One directory entry. */
export interface SftpEntry {
  filename: string;
  attrs: SftpAttrs;
}

// The subset of ssh2's untyped API used here.
type Callback<T> = (err: Error | undefined | null, value: T) => void;
interface RawSftp {
  _extensions: Record<string, string>;
  _maxWriteLen: number;
  _maxReadLen: number;
  open(path: string, flags: string, attrs: { mode: number }, cb: Callback<Buffer>): void;
  close(handle: Buffer, cb: Callback<void>): void;
  read(handle: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: Callback<number>): void;
  write(handle: Buffer, buf: Buffer, off: number, len: number, pos: number, cb: Callback<void>): void;
  fstat(handle: Buffer, cb: Callback<SftpAttrs>): void;
  stat(path: string, cb: Callback<SftpAttrs>): void;
  readdir(path: string, cb: Callback<SftpEntry[]>): void;
  unlink(path: string, cb: Callback<void>): void;
  mkdir(path: string, attrs: { mode: number }, cb: Callback<void>): void;
  rmdir(path: string, cb: Callback<void>): void;
  rename(from: string, to: string, cb: Callback<void>): void;
  ext_openssh_rename(from: string, to: string, cb: Callback<void>): void;
}
interface RawClient {
  on(event: string, listener: (...args: never[]) => void): RawClient;
  connect(config: Record<string, unknown>): void;
  sftp(cb: Callback<RawSftp>): void;
  end(): void;
  destroy(): void;
}

/** SFTP status codes the backend tells apart (draft-ietf-secsh-filexfer-02). */
export const SFTP_STATUS = { EOF: 1, NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4 } as const;

/** Whether `err` is an SFTP status reply with the given code. */
export function isStatus(err: unknown, code: number): boolean {
  return (err as { code?: unknown })?.code === code;
}

/**
 * One SSH connection with its SFTP channel. Every call rejects when the
 * connection drops; `closed` then turns true and the owner reconnects.
 */
export class Session {
  closed = false;
  readonly #client: RawClient;
  readonly #sftp: RawSftp;

  constructor(client: RawClient, sftp: RawSftp) {
    this.#client = client;
    this.#sftp = sftp;
    client.on("close", () => (this.closed = true));
    client.on("error", () => (this.closed = true));
  }

  /** Largest data length of one read/write request the server accepts. */
  get maxWrite(): number {
    return this.#sftp._maxWriteLen || 32 * 1024;
  }
  get maxRead(): number {
    return this.#sftp._maxReadLen || 32 * 1024;
  }

  /** Whether the server has OpenSSH's `posix-rename@openssh.com` (rename over an existing file). */
  get posixRename(): boolean {
    return "posix-rename@openssh.com" in (this.#sftp._extensions ?? {});
  }

  #call<T>(fn: (cb: Callback<T>) => void): Promise<T> {
    if (this.closed) return Promise.reject(new Error("Not connected"));
    return new Promise<T>((resolve, reject) => {
      try {
        fn((err, value) => (err ? reject(err) : resolve(value)));
      } catch (err) {
        reject(err);
      }
    });
  }

  open(path: string, flags: string): Promise<Buffer> {
    return this.#call((cb) => this.#sftp.open(path, flags, { mode: 0o644 }, cb));
  }
  close(handle: Buffer): Promise<void> {
    return this.#call((cb) => this.#sftp.close(handle, cb));
  }
  /** Reads up to `len` bytes at `pos`; resolves to the bytes read (fewer at end of file). */
  async read(handle: Buffer, pos: number, len: number): Promise<Uint8Array> {
    const buf = Buffer.allocUnsafeSlow(len);
    const n = await this.#call<number>((cb) => this.#sftp.read(handle, buf, 0, len, pos, cb));
    return new Uint8Array(buf.buffer, buf.byteOffset, n);
  }
  write(handle: Buffer, pos: number, data: Uint8Array): Promise<void> {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return this.#call((cb) => this.#sftp.write(handle, buf, 0, buf.length, pos, cb));
  }
  fstat(handle: Buffer): Promise<SftpAttrs> {
    return this.#call((cb) => this.#sftp.fstat(handle, cb));
  }
  stat(path: string): Promise<SftpAttrs> {
    return this.#call((cb) => this.#sftp.stat(path, cb));
  }
  readdir(path: string): Promise<SftpEntry[]> {
    return this.#call((cb) => this.#sftp.readdir(path, cb));
  }
  unlink(path: string): Promise<void> {
    return this.#call((cb) => this.#sftp.unlink(path, cb));
  }
  mkdir(path: string): Promise<void> {
    return this.#call((cb) => this.#sftp.mkdir(path, { mode: 0o755 }, cb));
  }
  rmdir(path: string): Promise<void> {
    return this.#call((cb) => this.#sftp.rmdir(path, cb));
  }
  /** Renames `from` to `to`, replacing `to` atomically where the server has posix-rename. */
  rename(from: string, to: string): Promise<void> {
    if (this.posixRename) return this.#call((cb) => this.#sftp.ext_openssh_rename(from, to, cb));
    return this.#call((cb) => this.#sftp.rename(from, to, cb));
  }

  /** Drops the connection at once (used when a request hangs). */
  destroy(): void {
    this.closed = true;
    this.#client.destroy();
  }
  /** Ends the connection politely. */
  end(): void {
    this.closed = true;
    this.#client.end();
  }
}

/** Everything needed to (re)connect, checked once from the settings. */
export interface ConnectOptions {
  host: string;
  port: number;
  username: string;
  method: "PASSWORD" | "PUBLIC_KEY_FILE";
  password?: string;
  /**
   * The private key, parsed (and decrypted) once: ssh2's key object, never logged. Decrypting an OpenSSH key
   * runs bcrypt-pbkdf in JavaScript (0.3–0.5 s for ssh-keygen's default 16 rounds here), which ssh2 would
   * otherwise repeat on every connect.
   */
  privateKey?: unknown;
  hostKeys: HostKeyPolicy;
  /** Handshake timeout in ms. */
  readyTimeoutMs: number;
}

function settingsError(message: string, cause?: unknown): InvalidSettingsError {
  return new InvalidSettingsError(message, { backend: KIND, op: "connect", cause });
}

/**
 * Checks the sftp settings and reads the key and known_hosts files. Every
 * error names the setting to fix.
 *
 * @example
 * ```ts
 * const options = await connectOptions(settings);
 * ```
 */
export async function connectOptions(settings: Settings): Promise<ConnectOptions> {
  const host = settings.sftpHost.trim();
  if (host === "") throw settingsError("SFTP_HOST is not set: set it to the SFTP server's host name");
  const portText = settings.sftpPort.trim() || "22";
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw settingsError(
      `SFTP_PORT=${JSON.stringify(settings.sftpPort)} is not a port: use 1–65535 (default 22)`,
    );
  }
  const username = settings.sftpUsername;
  if (username === "") {
    throw settingsError("PLUGIN_USERNAME (or SFTP_USERNAME) is not set: set the SFTP user");
  }
  let method = settings.sftpAuthMethod;
  if (method === "") {
    // The Go plugin fails on an empty method; choosing the one whose material is set is friendlier.
    if (settings.sftpPublicKeyFile !== "") method = "PUBLIC_KEY_FILE";
    else if (settings.sftpPassword !== "") method = "PASSWORD";
    else {
      throw settingsError(
        "no SFTP credentials: set SFTP_AUTH_METHOD=PUBLIC_KEY_FILE with PLUGIN_PUBLIC_KEY_FILE (a private key " +
          "file), or SFTP_AUTH_METHOD=PASSWORD with PLUGIN_PASSWORD",
      );
    }
  }
  const options: ConnectOptions = {
    host,
    port,
    username,
    method: method as ConnectOptions["method"],
    hostKeys: { fingerprints: [] },
    readyTimeoutMs: settings.backendOperationTimeout > 0 ? settings.backendOperationTimeout : 180_000,
  };
  if (method === "PASSWORD") {
    if (settings.sftpPassword === "") {
      throw settingsError("SFTP_AUTH_METHOD=PASSWORD but PLUGIN_PASSWORD (or SFTP_PASSWORD) is not set");
    }
    options.password = settings.sftpPassword;
  } else {
    const path = settings.sftpPublicKeyFile;
    if (path === "") {
      throw settingsError(
        "SFTP_AUTH_METHOD=PUBLIC_KEY_FILE but PLUGIN_PUBLIC_KEY_FILE (or SFTP_PUBLIC_KEY_FILE) is not set: " +
          "set it to the path of the PRIVATE key file",
      );
    }
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      throw settingsError(`cannot read the private key file ${path} (PLUGIN_PUBLIC_KEY_FILE)`, err);
    }
    const passphrase = settings.sftpKeyPassphrase || undefined;
    const parsed = parseKey(text, passphrase);
    if (parsed instanceof Error) {
      // ssh2's messages name the problem without key material.
      if (/encrypted/i.test(parsed.message) && /no passphrase/i.test(parsed.message)) {
        throw settingsError(
          `the private key file ${path} is encrypted: set PLUGIN_SFTP_KEY_PASSPHRASE (or SFTP_KEY_PASSPHRASE)`,
        );
      }
      if (passphrase !== undefined && /decrypt|passphrase|bad/i.test(parsed.message)) {
        throw settingsError(
          `cannot decrypt the private key file ${path}: check PLUGIN_SFTP_KEY_PASSPHRASE (or SFTP_KEY_PASSPHRASE)`,
        );
      }
      throw settingsError(
        `the file ${path} (PLUGIN_PUBLIC_KEY_FILE) is not a usable private key (${parsed.message}); note that ` +
          `despite its name the setting takes the PRIVATE key, not the .pub file`,
      );
    }
    const key = Array.isArray(parsed) ? parsed[0] : parsed; // OpenSSH's format holds one key
    if (String(key?.getPrivatePEM?.() ?? "") === "") {
      throw settingsError(
        `the file ${path} (PLUGIN_PUBLIC_KEY_FILE) holds a public key: the setting takes the PRIVATE key file`,
      );
    }
    options.privateKey = key;
  }
  if (settings.sftpKnownHostsFile !== "") {
    const path = settings.sftpKnownHostsFile;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      throw settingsError(`cannot read the known_hosts file ${path} (SFTP_KNOWN_HOSTS_FILE)`, err);
    }
    options.hostKeys.knownHosts = { path, entries: parseKnownHosts(text) };
  }
  for (const raw of settings.sftpHostKeyFingerprint.split(",").filter((s) => s.trim() !== "")) {
    const fp = normalizeFingerprint(raw);
    if (!fp) {
      throw settingsError(
        `SFTP_HOST_KEY_FINGERPRINT=${JSON.stringify(raw.trim())} is not a SHA-256 fingerprint: use the ` +
          `SHA256:… form that ssh-keygen -lf <host key>.pub prints`,
      );
    }
    options.hostKeys.fingerprints.push(fp);
  }
  return options;
}

/** What {@link connect} learned about the server. */
export interface Connected {
  session: Session;
  /** Fingerprint of the presented host key. */
  fingerprint: string;
  keyType: string;
}

/**
 * Opens one SSH connection and its SFTP channel. The host key is checked
 * against the policy, and against `expectFingerprint` (the key seen on the
 * first connection: a reconnect must reach the same server). `sock`, when
 * given, is a socket already connected or connecting to the server
 * (`preconnect.ts`); otherwise ssh2 opens one.
 *
 * @example
 * ```ts
 * const { session } = await connect(options);
 * ```
 */
export function connect(
  options: ConnectOptions,
  expectFingerprint?: string,
  sock?: Socket,
): Promise<Connected> {
  const ctx = { backend: KIND, op: "connect", object: `${options.host}:${options.port}` };
  const client = new Client() as unknown as RawClient;
  let hostKey: Uint8Array | undefined;
  let refused: string | undefined;
  return new Promise<Connected>((resolve, reject) => {
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      client.destroy();
      reject(err);
    };
    client.on("error", (err: Error & { level?: string }) => {
      if (refused) return fail(new AuthFailedError(refused, { ...ctx, cause: err }));
      if (err.level === "client-authentication") {
        const what = options.method === "PASSWORD"
          ? "the password (PLUGIN_PASSWORD / SFTP_PASSWORD)"
          : "the private key (PLUGIN_PUBLIC_KEY_FILE / SFTP_PUBLIC_KEY_FILE; its public half must be in the " +
            "user's authorized_keys)";
        return fail(
          new AuthFailedError(`the server refused ${options.username} with ${what}: check it`, {
            ...ctx,
            cause: err,
          }),
        );
      }
      fail(err);
    });
    client.on(
      "close",
      () => fail(refused ? new AuthFailedError(refused, ctx) : new Error("connection closed")),
    );
    client.on("ready", () => {
      // ssh2's readyTimeout ends with authentication: the SFTP channel gets the same bound, or a server that
      // stalls now would keep the connect pending until the keepalives give up, a minute later.
      const timer = setTimeout(
        () =>
          fail(
            Object.assign(new Error(`Timed out opening the SFTP channel (${options.readyTimeoutMs} ms)`), {
              level: "client-timeout",
            }),
          ),
        options.readyTimeoutMs,
      );
      client.sftp((err, sftp) => {
        clearTimeout(timer);
        if (err) return fail(err);
        settled = true;
        resolve({
          session: new Session(client, sftp),
          fingerprint: fingerprint(hostKey!),
          keyType: keyType(hostKey!),
        });
      });
    });
    const algorithms = preferredHostKeyAlgorithms(options.hostKeys, options.host, options.port);
    client.connect({
      host: options.host,
      port: options.port,
      ...(sock ? { sock } : {}),
      username: options.username,
      // Only the configured method (ssh2's default first asks for "none", a round trip servers refuse),
      // with the key parsed once in connectOptions (ssh2 takes a parsed key as it is).
      authHandler: [
        options.method === "PASSWORD"
          ? { type: "password", username: options.username, password: options.password }
          : { type: "publickey", username: options.username, key: options.privateKey },
      ],
      tryKeyboard: false,
      readyTimeout: options.readyTimeoutMs,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 4,
      algorithms: {
        // chacha20-poly1305 first (as OpenSSH does): under Deno it moves twice the bytes of AES-GCM per CPU second.
        cipher: CIPHERS,
        ...(algorithms ? { serverHostKey: algorithms } : {}),
      },
      hostVerifier: (key: Buffer) => {
        hostKey = new Uint8Array(key);
        const verdict = checkHostKey(hostKey, options.host, options.port, options.hostKeys);
        if (!verdict.ok) {
          refused = verdict.reason;
          return false;
        }
        const fp = fingerprint(hostKey);
        if (expectFingerprint !== undefined && fp !== expectFingerprint) {
          refused = `HOST KEY CHANGED between connections: ${options.host}:${options.port} first presented ` +
            `${expectFingerprint}, now ${fp}`;
          return false;
        }
        return true;
      },
    });
    coalesceWrites((client as unknown as { _sock?: CorkableSocket })._sock);
  });
}

/** The part of `node:net`'s Socket that {@link coalesceWrites} uses. */
interface CorkableSocket {
  write(data: Uint8Array): boolean;
  cork(): void;
  uncork(): void;
}

/**
 * Makes the writes ssh2 issues in one turn of the event loop leave in one
 * system call. ssh2 writes every SSH packet as three chunks (the encrypted
 * length, the payload, the MAC) and the socket has no delay, so each became its
 * own `sendto` and TCP segment: corking until the current job ends hands them
 * (and the other packets sent in the same turn) to the socket's `writev`.
 */
function coalesceWrites(sock: CorkableSocket | undefined): void {
  if (typeof sock?.cork !== "function") return; // not the socket this was written for: leave it alone
  const write = sock.write.bind(sock);
  let corked = false;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
  sock.write = (data: Uint8Array) => {
    if (!corked) {
      corked = true;
      sock.cork();
      queueMicrotask(uncork);
    }
    return write(data);
  };
}

/** Network failures worth a reconnect (not a refusal by the server). */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof StorageError) return false;
  if (typeof (err as { code?: unknown })?.code === "number") return false; // an SFTP status reply
  const e = err as { code?: string; level?: string; message?: string; name?: string };
  if (e?.name === "IdleTimeoutError") return true;
  if (e?.level === "client-socket" || e?.level === "client-timeout") return true;
  if (
    typeof e?.code === "string" &&
    /^E(CONNRESET|CONNREFUSED|CONNABORTED|PIPE|TIMEDOUT|HOSTUNREACH|NETUNREACH)$/.test(e.code)
  ) {
    return true;
  }
  // "Connection lost before handshake": the server closed the connection before its banner (sshd's MaxStartups
  // throttling does that), so a later attempt may well be let in.
  return /No response from server|Not connected|connection closed|Connection lost before handshake|Channel|socket|ECONN|EPIPE|Timed out/i
    .test(e?.message ?? "");
}

/** Maps a connect failure to the typed error callers get. */
export function connectFailure(err: unknown, options: ConnectOptions): StorageError {
  if (err instanceof StorageError) return err;
  const ctx = { backend: KIND, op: "connect", object: `${options.host}:${options.port}`, cause: err };
  const text = err instanceof Error ? err.message : String(err);
  return new UnavailableError(
    `cannot reach the SFTP server ${options.host}:${options.port} (${text}): check SFTP_HOST and SFTP_PORT ` +
      `and that sshd runs there`,
    ctx,
  );
}

/** Logs the loud warning for an unverified host key, with how to pin it. */
export function warnUnverified(log: Logger, options: ConnectOptions, connected: Connected): void {
  log.warn(
    `SFTP host key NOT VERIFIED (the Go plugin never verified it either): anyone between this runner and ` +
      `${options.host} could read and change the cache. Pin the key with ` +
      `SFTP_HOST_KEY_FINGERPRINT=${connected.fingerprint} (check it on the server with ` +
      `ssh-keygen -lf /etc/ssh/ssh_host_${
        connected.keyType.replace(/^ssh-/, "")
      }_key.pub) or set SFTP_KNOWN_HOSTS_FILE`,
    { host: options.host, port: options.port, host_key: `${connected.keyType} ${connected.fingerprint}` },
  );
}
