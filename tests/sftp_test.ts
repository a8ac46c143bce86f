/**
 * The sftp backend against a real OpenSSH sshd on 127.0.0.1
 * (`scripts/servers/sshd.ts`): the conformance suite with key and with
 * password auth, and the failures: wrong password or key, encrypted keys,
 * unknown and mismatched host keys, a missing cache root, connections that
 * drop or hang mid-transfer, and no credential in any log line; the TCP
 * connection opened before the backend loads (preconnect): used once, same
 * errors, closed when unused. The cache root is a local directory, so the
 * tests also look at the files sshd wrote.
 */
import { backendConformance, readAll, seededBytes, streamOf } from "./backend_conformance.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { capture, settingsFrom } from "./support.ts";
import { startSshd } from "../scripts/servers/sshd.ts";
import { openBackend } from "../lib/storage/open.ts";
import { createSftpBackend, SftpBackend } from "../lib/storage/sftp/backend.ts";
import { connectOptions } from "../lib/storage/sftp/connect.ts";
import { preconnect } from "../lib/storage/sftp/preconnect.ts";
import {
  AuthFailedError,
  type Backend,
  InvalidSettingsError,
  NotFoundError,
  UnavailableError,
} from "../lib/storage/backend.ts";
import { DEFAULT_RETRY_POLICY } from "../lib/storage/transfer/retry.ts";
import { Logger } from "../lib/log.ts";
import { run } from "../main.ts";

const quiet = new Logger({ sink: () => {} });

backendConformance("sftp (key auth, pinned host key)", async () => {
  const sshd = await startSshd();
  const backend = await openBackend(settingsFrom(sshd.env), quiet);
  return { backend, teardown: () => sshd.stop() };
});

backendConformance("sftp (password auth, known_hosts)", async () => {
  const sshd = await startSshd();
  if (!sshd.passwordUser) {
    await sshd.stop();
    throw new Error("password auth needs root (sshd checks passwords against /etc/shadow)");
  }
  const backend = await openBackend(
    settingsFrom({
      PLUGIN_BACKEND: "sftp",
      SFTP_HOST: sshd.host,
      SFTP_PORT: String(sshd.port),
      SFTP_AUTH_METHOD: "PASSWORD",
      PLUGIN_USERNAME: sshd.passwordUser.name,
      PLUGIN_PASSWORD: sshd.passwordUser.password,
      SFTP_CACHE_ROOT: sshd.cacheRoot,
      SFTP_KNOWN_HOSTS_FILE: sshd.knownHostsFile,
    }),
    quiet,
  );
  return { backend, teardown: () => sshd.stop() };
});

/** Every file under `dir` (relative paths), to see what sshd left on disk. */
async function filesUnder(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${rel}`)) {
    const name = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await filesUnder(dir, name));
    else out.push(name);
  }
  return out.sort();
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** A stream of `data` that calls `at()` once, after `after` bytes went out. */
function streamWithHook(
  data: Uint8Array,
  after: number,
  at: () => Promise<unknown>,
): ReadableStream<Uint8Array> {
  let pos = 0;
  let fired = false;
  return new ReadableStream({
    async pull(c) {
      if (!fired && pos >= after) {
        fired = true;
        await at();
      }
      if (pos >= data.length) return c.close();
      c.enqueue(data.slice(pos, pos + 256 * 1024));
      pos += 256 * 1024;
    },
  });
}

Deno.test({
  name: "sftp: failures are clear, host keys are verified, dropped connections are survived",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const sshd = await startSshd();
    const { log, lines } = capture();
    const backends: Backend[] = [];
    // Through openBackend: the first connection of every case below uses the socket opened early (preconnect).
    const open = async (env: Record<string, string>, logger = log) => {
      const b = await openBackend(settingsFrom({ ...sshd.env, ...env }), logger);
      backends.push(b);
      return b;
    };
    const secrets = [
      sshd.passwordUser?.password ?? "no-password",
      sshd.clientKeyPassphrase,
      "wrong-password-for-test",
      ...(await Deno.readTextFile(sshd.clientKeyFile)).split("\n").filter((l) =>
        l.length > 20 && !l.includes(" ")
      ),
      ...(await Deno.readTextFile(sshd.otherKeyFile)).split("\n").filter((l) =>
        l.length > 20 && !l.includes(" ")
      ),
    ];
    try {
      await t.step("objects live at <cache root>/<name>, metadata beside them, no temp files", async () => {
        const b = await open({});
        await b.put("key one/node_modules", streamOf(new TextEncoder().encode("payload")), {
          cicache_format: "tar",
        });
        assertEquals(await Deno.readTextFile(`${sshd.cacheRoot}/key one/node_modules`), "payload");
        assertEquals(
          JSON.parse(await Deno.readTextFile(`${sshd.cacheRoot}/key one/node_modules.cicache-meta.json`)),
          { cicache_format: "tar" },
        );
        assertEquals(await filesUnder(sshd.cacheRoot), [
          "key one/node_modules",
          "key one/node_modules.cicache-meta.json",
        ]);
        // A Go plugin object (no metadata file) is listed and read.
        await Deno.writeTextFile(`${sshd.cacheRoot}/key one/go-object`, "from go");
        const info = await b.stat("key one/go-object");
        assertEquals(info?.size, 7);
        assertEquals(info?.meta, {});
        assertEquals(new TextDecoder().decode(await readAll(await b.get("key one/go-object"))), "from go");
        await b.delete("key one/go-object");
        await b.delete("key one/node_modules");
        assertEquals(await filesUnder(sshd.cacheRoot), []);
        await assertRejects(() => b.get("../outside"), InvalidSettingsError);
      });

      await t.step("a chunk is released only after all of its bytes were written", async () => {
        // One request in flight: each piece's reply comes before the chunk's next piece is sent.
        const b = new SftpBackend({
          connect: await connectOptions(settingsFrom(sshd.env)),
          root: sshd.cacheRoot,
          log,
          requestsInFlight: 1,
        });
        await b.open();
        backends.push(b);
        const data = seededBytes(9 * 1024 * 1024 + 333, 31);
        const chunk = 3 * 1024 * 1024 + 1; // several write requests per chunk
        let pos = 0;
        let released = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(c) {
            if (pos >= data.length) return c.close();
            c.enqueue(data.slice(pos, pos + chunk));
            pos += chunk;
          },
        });
        // The producer reuses released memory at once: poison it, as a reused buffer would be overwritten.
        await b.put("release/obj", body, {}, {
          release: (c) => {
            released++;
            c.fill(0xee);
          },
        });
        assertEquals(released, 4);
        assert(
          sameBytes(await Deno.readFile(`${sshd.cacheRoot}/release/obj`), data),
          "released memory was sent",
        );
        await b.delete("release/obj");
      });

      await t.step("wrong password: AuthFailedError naming the setting, at once", async () => {
        if (!sshd.passwordUser) throw new Error("password auth needs root");
        const started = Date.now();
        const err = await assertRejects(
          () =>
            open({
              SFTP_AUTH_METHOD: "PASSWORD",
              PLUGIN_USERNAME: sshd.passwordUser!.name,
              PLUGIN_PASSWORD: "wrong-password-for-test",
            }),
          AuthFailedError,
        );
        assertStringIncludes(err.message, "PLUGIN_PASSWORD");
        assert(Date.now() - started < 60_000, "an authentication failure is not retried");
      });

      await t.step("wrong key: AuthFailedError naming the key setting", async () => {
        const err = await assertRejects(
          () => open({ SFTP_PUBLIC_KEY_FILE: sshd.otherKeyFile }),
          AuthFailedError,
        );
        assertStringIncludes(err.message, "PLUGIN_PUBLIC_KEY_FILE");
        assertStringIncludes(err.message, "authorized_keys");
      });

      await t.step(
        "encrypted key: clear error without passphrase, works with it, wrong one named",
        async () => {
          const missing = await assertRejects(
            () => open({ SFTP_PUBLIC_KEY_FILE: sshd.encryptedKeyFile }),
            InvalidSettingsError,
          );
          assertStringIncludes(missing.message, "SFTP_KEY_PASSPHRASE");
          const wrong = await assertRejects(
            () =>
              open({
                SFTP_PUBLIC_KEY_FILE: sshd.encryptedKeyFile,
                SFTP_KEY_PASSPHRASE: "not the passphrase",
              }),
            InvalidSettingsError,
          );
          assertStringIncludes(wrong.message, "SFTP_KEY_PASSPHRASE");
          const b = await open({
            SFTP_PUBLIC_KEY_FILE: sshd.encryptedKeyFile,
            SFTP_KEY_PASSPHRASE: sshd.clientKeyPassphrase,
          });
          assertEquals(await b.stat("nothing/here"), null);
        },
      );

      await t.step("a .pub file given as the key is named as the mistake", async () => {
        const err = await assertRejects(
          () => open({ SFTP_PUBLIC_KEY_FILE: `${sshd.clientKeyFile}.pub` }),
          InvalidSettingsError,
        );
        assertStringIncludes(err.message, "PRIVATE");
      });

      await t.step("mismatched pinned fingerprint: refused before authenticating", async () => {
        const other = "SHA256:" + "A".repeat(43);
        const err = await assertRejects(() => open({ SFTP_HOST_KEY_FINGERPRINT: other }), AuthFailedError);
        assertStringIncludes(err.message, "HOST KEY MISMATCH");
        assertStringIncludes(err.message, sshd.hostKeyFingerprint);
        const bad = await assertRejects(
          () => open({ SFTP_HOST_KEY_FINGERPRINT: "MD5:12:34" }),
          InvalidSettingsError,
        );
        assertStringIncludes(bad.message, "SFTP_HOST_KEY_FINGERPRINT");
      });

      await t.step(
        "known_hosts: unknown host and changed key are refused, the right key accepted",
        async () => {
          const dir = await Deno.makeTempDir();
          try {
            const unknown = `${dir}/unknown`;
            await Deno.writeTextFile(
              unknown,
              (await Deno.readTextFile(sshd.knownHostsFile)).replace("127.0.0.1", "10.9.9.9"),
            );
            const e1 = await assertRejects(
              () => open({ SFTP_HOST_KEY_FINGERPRINT: "", SFTP_KNOWN_HOSTS_FILE: unknown }),
              AuthFailedError,
            );
            assertStringIncludes(e1.message, "not in the known_hosts file");
            const changed = `${dir}/changed`;
            const otherPub = (await Deno.readTextFile(`${sshd.otherKeyFile}.pub`)).split(" ");
            await Deno.writeTextFile(changed, `[127.0.0.1]:${sshd.port} ${otherPub[0]} ${otherPub[1]}\n`);
            const e2 = await assertRejects(
              () => open({ SFTP_HOST_KEY_FINGERPRINT: "", SFTP_KNOWN_HOSTS_FILE: changed }),
              AuthFailedError,
            );
            assertStringIncludes(e2.message, "HOST KEY MISMATCH");
            // A hashed entry (ssh-keygen -H) is matched too.
            const hashed = `${dir}/hashed`;
            await Deno.copyFile(sshd.knownHostsFile, hashed);
            const out = await new Deno.Command("ssh-keygen", {
              args: ["-H", "-f", hashed],
              stdout: "null",
              stderr: "null",
            })
              .output();
            assert(out.success, "ssh-keygen -H");
            assert((await Deno.readTextFile(hashed)).startsWith("|1|"), "hashed entry");
            const b = await open({ SFTP_HOST_KEY_FINGERPRINT: "", SFTP_KNOWN_HOSTS_FILE: hashed });
            assertEquals(await b.stat("nothing"), null);
          } finally {
            await Deno.remove(dir, { recursive: true });
          }
        },
      );

      await t.step("no host key setting: connects as the Go plugin did, with a loud warning", async () => {
        const { log: l, lines: own } = capture();
        const b = await open({ SFTP_HOST_KEY_FINGERPRINT: "" }, l);
        assertEquals(await b.stat("nothing"), null);
        const warning = own.find((line) => line.includes("NOT VERIFIED"));
        assert(warning !== undefined, `no warning in ${own.join("\n")}`);
        assertStringIncludes(warning, `SFTP_HOST_KEY_FINGERPRINT=${sshd.hostKeyFingerprint}`);
        lines.push(...own);
      });

      await t.step("missing cache root and missing settings are named", async () => {
        const e1 = await assertRejects(
          () => open({ SFTP_CACHE_ROOT: `${sshd.cacheRoot}/nope` }),
          UnavailableError,
        );
        assertStringIncludes(e1.message, "SFTP_CACHE_ROOT");
        assertStringIncludes(e1.message, "does not exist");
        const e2 = await assertRejects(() => open({ SFTP_CACHE_ROOT: "" }), InvalidSettingsError);
        assertStringIncludes(e2.message, "SFTP_CACHE_ROOT");
        const e3 = await assertRejects(() => open({ SFTP_HOST: "" }), InvalidSettingsError);
        assertStringIncludes(e3.message, "SFTP_HOST");
        const e4 = await assertRejects(() => open({ SFTP_PORT: "70000" }), InvalidSettingsError);
        assertStringIncludes(e4.message, "SFTP_PORT");
        const e5 = await assertRejects(
          () =>
            connectOptions(settingsFrom({ ...sshd.env, SFTP_AUTH_METHOD: "PASSWORD", PLUGIN_PASSWORD: "" })),
          InvalidSettingsError,
        );
        assertStringIncludes(e5.message, "PLUGIN_PASSWORD");
      });

      await t.step("a connection dropped mid-upload is re-established and the upload completes", async () => {
        const b = await open({});
        const data = seededBytes(12 * 1024 * 1024, 11);
        let dropped = 0;
        await b.put(
          "drop/up",
          streamWithHook(data, 4 * 1024 * 1024, async () => (dropped = await sshd.dropSessions())),
          {},
        );
        assert(dropped > 0, "sessions were killed");
        assert(sameBytes(await Deno.readFile(`${sshd.cacheRoot}/drop/up`), data), "uploaded bytes differ");
        assertEquals(await filesUnder(`${sshd.cacheRoot}/drop`), ["up", "up.cicache-meta.json"]);
        assert(lines.some((l) => l.includes("retrying")), "the retry was logged");
      });

      await t.step(
        "a connection dropped mid-download is re-established and the bytes are whole",
        async () => {
          const b = await open({});
          const data = seededBytes(12 * 1024 * 1024, 12);
          await Deno.writeFile(`${sshd.cacheRoot}/drop/down`, data);
          const reader = (await b.get("drop/down")).getReader();
          const parts: Uint8Array[] = [];
          let got = 0;
          let dropped = 0;
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parts.push(value);
            got += value.length;
            if (!dropped && got >= 3 * 1024 * 1024) dropped = await sshd.dropSessions();
          }
          assert(dropped > 0, "sessions were killed");
          const all = new Uint8Array(got);
          let off = 0;
          for (const p of parts) {
            all.set(p, off);
            off += p.length;
          }
          assert(sameBytes(all, data), "downloaded bytes differ");
        },
      );

      await t.step("an upload that cannot survive the drop leaves no object and no temp file", async () => {
        const b = new SftpBackend({
          connect: await connectOptions(settingsFrom(sshd.env)),
          root: sshd.cacheRoot,
          log,
          retry: { ...DEFAULT_RETRY_POLICY, retries: 0 },
        });
        await b.open();
        backends.push(b);
        await b.put("drop/keep", streamOf(new TextEncoder().encode("old")), {});
        await assertRejects(
          () =>
            b.put(
              "drop/keep",
              streamWithHook(seededBytes(8 << 20, 5), 3 << 20, () => sshd.dropSessions()),
              {},
            ),
          UnavailableError,
        );
        assertEquals(await Deno.readTextFile(`${sshd.cacheRoot}/drop/keep`), "old");
        const left = (await filesUnder(sshd.cacheRoot)).filter((f) => f.includes(".cicache-tmp-"));
        assertEquals(left, [], "temp files removed after reconnecting");
        await assertRejects(() => b.get("drop/missing"), NotFoundError);
      });

      await t.step("a hung connection hits the per-request idle timeout and is replaced", async () => {
        const b = await open({ PLUGIN_BACKEND_OPERATION_TIMEOUT: "2s" });
        await b.put("hang/obj", streamOf(new TextEncoder().encode("before")), {});
        // Freeze the sessions: requests get no answer, TCP stays up.
        const frozen = await sshd.freezeSessions();
        assert(frozen.length > 0, "sessions were frozen");
        try {
          const started = Date.now();
          assertEquals(new TextDecoder().decode(await readAll(await b.get("hang/obj"))), "before");
          assert(Date.now() - started >= 1500, "the idle timeout was waited for");
        } finally {
          for (const pid of frozen) {
            try {
              Deno.kill(pid, "SIGKILL");
            } catch { /* gone */ }
          }
        }
        assert(lines.some((l) => l.includes("backend operation timeout")), "the idle timeout was logged");
      });

      await t.step("no password, passphrase or key material in any log line", () => {
        assert(lines.length > 5, "lines were logged");
        for (const line of lines) {
          for (const s of secrets) assert(!line.includes(s), `a secret reached the log: ${line}`);
        }
      });
    } finally {
      for (const b of backends) await b.close?.();
      await sshd.stop();
    }
  },
});

Deno.test("sftp: the object layout and settings match the Go plugin's", async () => {
  const s = settingsFrom({
    PLUGIN_BACKEND: "sftp",
    SFTP_HOST: "cache.example.com",
    SFTP_PORT: "2222",
    SFTP_AUTH_METHOD: "PASSWORD",
    PLUGIN_USERNAME: "ci",
    PLUGIN_PASSWORD: "pw",
    SFTP_CACHE_ROOT: "/srv/cache/",
  });
  const options = await connectOptions(s);
  assertEquals([options.host, options.port, options.username, options.method], [
    "cache.example.com",
    2222,
    "ci",
    "PASSWORD",
  ]);
  const b = new SftpBackend({ connect: options, root: s.sftpCacheRoot, log: quiet });
  assertEquals(b.path("repo/branch/node_modules", "get"), "/srv/cache/repo/branch/node_modules");
  assertEquals(b.path("/repo/x", "get"), "/srv/cache/repo/x");
});

Deno.test({
  name: "sftp cli: save, listing restore and flush through run() with password auth",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sshd = await startSshd();
    const dir = await Deno.makeTempDir();
    try {
      if (!sshd.passwordUser) throw new Error("password auth needs root");
      const mount = `${dir}/cache`;
      await Deno.mkdir(`${mount}/sub`, { recursive: true });
      const big = seededBytes(5 * 1024 * 1024 + 17, 21);
      await Deno.writeFile(`${mount}/sub/big.bin`, big);
      await Deno.writeTextFile(`${mount}/a.txt`, "hello sftp");
      const lines: string[] = [];
      const sink = (l: string) => lines.push(l);
      const env = {
        PLUGIN_BACKEND: "sftp",
        SFTP_HOST: sshd.host,
        SFTP_PORT: String(sshd.port),
        SFTP_AUTH_METHOD: "PASSWORD",
        PLUGIN_USERNAME: sshd.passwordUser.name,
        PLUGIN_PASSWORD: sshd.passwordUser.password,
        SFTP_CACHE_ROOT: sshd.cacheRoot,
        SFTP_HOST_KEY_FINGERPRINT: sshd.hostKeyFingerprint,
        PLUGIN_CACHE_KEY: "k",
        PLUGIN_ARCHIVE_FORMAT: "zstd",
      };
      assertEquals(
        await run([], { ...env, PLUGIN_MOUNT: mount, PLUGIN_REBUILD: "true" }, { sink }),
        0,
        lines.join("\n"),
      );
      const stored = await filesUnder(sshd.cacheRoot);
      assertEquals(stored.filter((f) => !f.endsWith(".cicache-meta.json")).length, 1, stored.join(", "));
      assert(stored[0].startsWith("k/"), `object under the key: ${stored.join(", ")}`);
      await Deno.remove(mount, { recursive: true });
      // No mounts: a listing restore of everything under the key (the Go plugin's SFTP could not list).
      assertEquals(await run([], { ...env, PLUGIN_RESTORE: "true" }, { sink }), 0, lines.join("\n"));
      assertEquals(await Deno.readTextFile(`${mount}/a.txt`), "hello sftp");
      assert(sameBytes(await Deno.readFile(`${mount}/sub/big.bin`), big), "restored bytes differ");
      assertEquals(await run([], { ...env, PLUGIN_FLUSH: "true" }, { sink }), 0, lines.join("\n"));
      assertEquals(await filesUnder(sshd.cacheRoot), []);
      assert(!lines.join("\n").includes(sshd.passwordUser.password), "the password was logged");
    } finally {
      await Deno.remove(dir, { recursive: true });
      await sshd.stop();
    }
  },
});

/** A TCP relay in front of `port` that counts connections and can close the first one at once. */
function countingRelay(port: number, closeFirst = false) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = { accepted: 0, open: 0 };
  const pumps: Promise<unknown>[] = [];
  (async () => {
    for await (const conn of listener) {
      state.accepted++;
      if (closeFirst && state.accepted === 1) {
        conn.close();
        continue;
      }
      state.open++;
      pumps.push(
        (async () => {
          const up = await Deno.connect({ hostname: "127.0.0.1", port });
          await Promise.all([
            conn.readable.pipeTo(up.writable).catch(() => {}),
            up.readable.pipeTo(conn.writable).catch(() => {}),
          ]);
          state.open--;
        })().catch(() => {}),
      );
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    state,
    close: async () => {
      listener.close();
      await Promise.allSettled(pumps);
    },
  };
}

/** Resolves once `check()` holds (polled), or rejects after a generous bound. */
async function until(check: () => boolean, what: string | (() => string), ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) {
      throw new Error(`timed out waiting until ${typeof what === "string" ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test({
  name:
    "sftp preconnect: the early socket is the first connection, errors read the same, an unused one is closed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const sshd = await startSshd();
    const relays: { close: () => Promise<void> }[] = [];
    const relay = (closeFirst = false) => {
      const r = countingRelay(sshd.port, closeFirst);
      relays.push(r);
      return r;
    };
    const env = (port: number, extra: Record<string, string> = {}) =>
      settingsFrom({ ...sshd.env, SFTP_PORT: String(port), ...extra });
    try {
      await t.step("opened before the backend loads, and the backend's first connect uses it", async () => {
        const r = relay();
        const early = await preconnect(env(r.port));
        assert(early !== undefined, "valid settings open a socket");
        await until(() => r.state.accepted === 1, "the relay saw the early connection");
        const backend = await createSftpBackend(env(r.port), quiet, early);
        try {
          await backend.put("pre/x", streamOf(new TextEncoder().encode("early")), {});
          assertEquals(new TextDecoder().decode(await readAll(await backend.get("pre/x"))), "early");
          assertEquals(r.state.accepted, 1, "no second connection: the early socket carried the session");
        } finally {
          await backend.close?.();
        }
      });

      await t.step("openBackend makes one connection, not an early one plus ssh2's own", async () => {
        const r = relay();
        const backend = await openBackend(env(r.port), quiet);
        await backend.close?.();
        assertEquals(r.state.accepted, 1);
      });

      await t.step("settings that fail before connecting close the early socket", async () => {
        const r = relay();
        const bad = env(r.port, { SFTP_PUBLIC_KEY_FILE: `${sshd.cacheRoot}/no-such-key` });
        const early = await preconnect(bad);
        await until(() => r.state.accepted === 1, "the relay saw the early connection");
        const err = await assertRejects(() => createSftpBackend(bad, quiet, early), InvalidSettingsError);
        assertStringIncludes(err.message, "PLUGIN_PUBLIC_KEY_FILE");
        await until(
          () => r.state.open === 0,
          () => `the early connection was closed (${JSON.stringify(r.state)})`,
        );
      });

      await t.step("invalid host or port settings open nothing", async () => {
        assertEquals(await preconnect(env(0, { SFTP_PORT: "70000" })), undefined);
        assertEquals(await preconnect(env(0, { SFTP_HOST: " " })), undefined);
      });

      await t.step("a refused connection reads as without the early socket", async () => {
        const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const port = (free.addr as Deno.NetAddr).port;
        free.close();
        const fast = { ...DEFAULT_RETRY_POLICY, retries: 0 };
        const direct = await connectOptions(env(port));
        const plain = await assertRejects(
          () => new SftpBackend({ connect: direct, root: sshd.cacheRoot, log: quiet, retry: fast }).open(),
          UnavailableError,
        );
        const wrong = await preconnect(env(port));
        assertEquals(
          wrong!.take("127.0.0.1", port + 1),
          undefined,
          "a socket to another target is not handed out",
        );
        // Refused before the backend took it (dropped, ssh2 connects itself), and refused while ssh2 holds it.
        const refusedFirst = await preconnect(env(port));
        await until(() => refusedFirst!.failed, "the early connect was refused");
        const messages: string[] = [];
        for (const early of [refusedFirst, await preconnect(env(port))]) {
          const err = await assertRejects(
            () =>
              new SftpBackend({ connect: direct, root: sshd.cacheRoot, log: quiet, retry: fast, early })
                .open(),
            UnavailableError,
          );
          messages.push(err.message);
        }
        assertEquals(messages, [plain.message, plain.message]);
        const viaEarly = { message: messages[1] };
        assertEquals(viaEarly.message, plain.message);
        assertStringIncludes(viaEarly.message, "SFTP_PORT");
        assertStringIncludes(viaEarly.message, "ECONNREFUSED");
      });

      await t.step(
        "an early socket the server closed at once: the connect is retried and works",
        async () => {
          const r = relay(true);
          const backend = await openBackend(env(r.port), quiet);
          await backend.close?.();
          assertEquals(r.state.accepted, 2, "the closed early socket, then a fresh connection");
        },
      );
    } finally {
      for (const r of relays) await r.close();
      await sshd.stop();
    }
  },
});
