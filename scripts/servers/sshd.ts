/**
 * Test server for the sftp backend: OpenSSH's `sshd` from Debian
 * (`openssh-server`, installed on first use by `scripts/install/openssh.sh`)
 * on a free port of 127.0.0.1, with its own `sshd_config`, ed25519 host key,
 * `authorized_keys` and cache root in a fresh temp dir. The SFTP side is
 * OpenSSH's `internal-sftp`, as on a real cache host.
 *
 * Users:
 * - as root (CI, the dev container): the system user `cicache-sftp` (made by
 *   the install script; no home, no shell) logs in with the test password
 *   {@link SFTP_TEST_PASSWORD} or the generated client key, and may only run
 *   `internal-sftp`. `UsePAM no`: sshd checks the password against
 *   `/etc/shadow` itself. Root may log in with the client key only (for the
 *   bench's `ssh … cat >` baseline, which needs a shell).
 * - as any other user: sshd runs without privilege separation as that user,
 *   who logs in with the key; password auth is then unavailable
 *   (`passwordUser` is undefined) because only root can check passwords.
 *
 * sshd runs in the foreground (`-D`), stopped by PID; a small watchdog kills
 * it by PID (and removes the temp dir) when the test process dies.
 *
 * Run alone: `deno run -A scripts/servers/sshd.ts` prints the environment
 * for the ci-cache CLI and waits for Ctrl-C.
 *
 * @module
 */

/** The test user the install script creates (root only). */
export const SFTP_TEST_USER = "cicache-sftp";
/** The test user's password (a throwaway, only accepted by the test sshd on 127.0.0.1). */
export const SFTP_TEST_PASSWORD = "cicache-sftp-test-password";

/** A running sshd and how to reach it. */
export interface SshdServer {
  /** Environment for the ci-cache CLI: key auth as {@link SshdServer.user}, host key pinned. */
  env: Record<string, string>;
  host: string;
  port: number;
  /** The user tests log in as. */
  user: string;
  /** Password login, when available (sshd runs as root). */
  passwordUser?: { name: string; password: string };
  /** Private key (OpenSSH format, no passphrase) accepted for {@link SshdServer.user}. */
  clientKeyFile: string;
  /** Same key pair encrypted with {@link SshdServer.clientKeyPassphrase}. */
  encryptedKeyFile: string;
  clientKeyPassphrase: string;
  /** A key sshd does not accept. */
  otherKeyFile: string;
  /** The host key's fingerprint, `SHA256:…` as `ssh-keygen -l` prints it. */
  hostKeyFingerprint: string;
  /** A `known_hosts` file with the host key under `[127.0.0.1]:<port>`. */
  knownHostsFile: string;
  /** A writable cache root owned by the login user. */
  cacheRoot: string;
  /**
   * An `ssh` command line (host key checked, key auth) for a user with a shell: root when running as root
   * (the test user only gets SFTP), else the current user. The bench's `… | ssh … 'cat > file'` baseline.
   */
  sshCommand: string;
  /** The temp dir (configs, keys, `sshd.log`). */
  dir: string;
  /** Kills every live SFTP session process (SIGKILL): their TCP connections drop. Returns how many. */
  dropSessions: () => Promise<number>;
  /** Stops (SIGSTOP) every live session process: requests hang while TCP stays up. Returns their PIDs. */
  freezeSessions: () => Promise<number[]>;
  /** Stops sshd (by PID) and removes the temp dir. */
  stop: () => Promise<void>;
}

/** Options for {@link startSshd}. */
export interface SshdOptions {
  /** Keep the temp dir after stop (for debugging). */
  keepDir?: boolean;
}

const SSHD = "/usr/sbin/sshd";
const ROOT = new URL("../../", import.meta.url).pathname;

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Installs openssh-server (and the test user) when missing: `scripts/install/openssh.sh`. */
export async function installOpenssh(): Promise<void> {
  const isRoot = Deno.uid() === 0;
  const ready = await Deno.stat(SSHD).then(() => true, () => false);
  const hasUser = !isRoot || await run("id", ["-u", SFTP_TEST_USER]).then(() => true, () => false);
  if (ready && hasUser) return;
  const out = await new Deno.Command("bash", {
    args: [`${ROOT}scripts/install/openssh.sh`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `installing OpenSSH failed (scripts/install/openssh.sh): ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function banner(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const buf = new Uint8Array(64);
      const timer = setTimeout(() => conn.close(), 2000);
      const n = await conn.read(buf).catch(() => null);
      clearTimeout(timer);
      return n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("SSH-2.0-");
    } finally {
      try {
        conn.close();
      } catch { /* closed by the timer */ }
    }
  } catch {
    return false;
  }
}

/** PIDs of every descendant of `pid` (from /proc). */
async function descendants(pid: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry.name));
      children.set(ppid, list);
    } catch { /* exited meanwhile */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

async function keygen(path: string, comment: string, passphrase = ""): Promise<void> {
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", path]);
}

/**
 * Starts sshd on a free port of 127.0.0.1 and waits until it sends its
 * banner.
 *
 * @example
 * ```ts
 * const sshd = await startSshd();
 * // run the CLI with { ...sshd.env, PLUGIN_REBUILD: "true", … }
 * await sshd.stop();
 * ```
 */
export async function startSshd(options: SshdOptions = {}): Promise<SshdServer> {
  await installOpenssh();
  const isRoot = Deno.uid() === 0;
  const user = isRoot ? SFTP_TEST_USER : (await run("id", ["-un"])).trim();
  const dir = await Deno.makeTempDir({ prefix: "ci-cache-sshd-" });
  await Deno.chmod(dir, 0o755); // the login user must reach the cache root inside
  try {
    await keygen(`${dir}/host_ed25519`, "ci-cache test host");
    await keygen(`${dir}/client_ed25519`, "ci-cache test client");
    await keygen(`${dir}/other_ed25519`, "ci-cache test other");
    const passphrase = "correct horse battery staple";
    await Deno.copyFile(`${dir}/client_ed25519`, `${dir}/client_encrypted`);
    await run("ssh-keygen", ["-q", "-p", "-N", passphrase, "-f", `${dir}/client_encrypted`]);
    await Deno.copyFile(`${dir}/client_ed25519.pub`, `${dir}/authorized_keys`);
    await Deno.chmod(`${dir}/authorized_keys`, 0o644);
    const cacheRoot = `${dir}/cache`;
    await Deno.mkdir(cacheRoot, { mode: 0o755 });
    if (isRoot) await run("chown", [`${SFTP_TEST_USER}:`, cacheRoot]);
    const hostPub = (await Deno.readTextFile(`${dir}/host_ed25519.pub`)).trim().split(" ");
    const fingerprint = (await run("ssh-keygen", ["-l", "-E", "sha256", "-f", `${dir}/host_ed25519.pub`]))
      .split(" ")[1];

    let lastLog = "";
    for (let attempt = 0; attempt < 4; attempt++) {
      const port = freePort();
      const config = [
        `Port ${port}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${dir}/host_ed25519`,
        `PidFile ${dir}/sshd.pid`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        "StrictModes no",
        "UsePAM no",
        `PasswordAuthentication ${isRoot ? "yes" : "no"}`,
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        `PermitRootLogin ${isRoot ? "prohibit-password" : "no"}`,
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "LogLevel VERBOSE",
        "Subsystem sftp internal-sftp",
        // The test user only gets SFTP; root (bench baseline) keeps a shell.
        ...(isRoot ? [`Match User ${SFTP_TEST_USER}`, "  ForceCommand internal-sftp"] : []),
        "",
      ].join("\n");
      await Deno.writeTextFile(`${dir}/sshd_config`, config);
      if (isRoot) await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
      const logPath = `${dir}/sshd.log`;
      // sshd runs in the foreground under bash; a watchdog subshell (which outlives a killed bash) kills sshd
      // by PID and removes the temp dir as soon as this process is gone, so a dying test run leaves nothing.
      const cleanup = options.keepDir ? "" : `; rm -rf ${dir}`;
      const guard = `${SSHD} -D -f ${dir}/sshd_config -E ${logPath} & p=$!; ` +
        `( while kill -0 ${Deno.pid} 2>/dev/null && kill -0 $p 2>/dev/null; do sleep 1; done; ` +
        `kill $p 2>/dev/null${cleanup} ) </dev/null >/dev/null 2>&1 & wait $p`;
      const child = new Deno.Command("bash", {
        args: ["-c", guard],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      let exited = false;
      const status = child.status.then((s) => {
        exited = true;
        return s;
      });
      const deadline = Date.now() + 30_000;
      while (!exited && Date.now() < deadline && !(await banner(port))) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const sshdPid = async (): Promise<number> => {
        try {
          return Number((await Deno.readTextFile(`${dir}/sshd.pid`)).trim());
        } catch {
          return 0;
        }
      };
      if (!exited && (await banner(port))) {
        const knownHostsFile = `${dir}/known_hosts`;
        await Deno.writeTextFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}\n`);
        const pid = await sshdPid();
        const stop = async () => {
          const kill = (signal: Deno.Signal) => {
            try {
              if (!exited && pid) Deno.kill(pid, signal);
            } catch { /* already gone */ }
          };
          kill("SIGTERM");
          const timer = setTimeout(() => {
            kill("SIGKILL");
            try {
              if (!exited) child.kill("SIGKILL");
            } catch { /* already gone */ }
          }, 5000);
          await status;
          clearTimeout(timer);
          if (!options.keepDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
        };
        const signalSessions = async (signal: Deno.Signal) => {
          const pid = await sshdPid();
          const pids = pid ? await descendants(pid) : [];
          for (const p of pids) {
            try {
              Deno.kill(p, signal);
            } catch { /* already gone */ }
          }
          return pids;
        };
        const dropSessions = async () => (await signalSessions("SIGKILL")).length;
        const freezeSessions = () => signalSessions("SIGSTOP");
        return {
          env: {
            PLUGIN_BACKEND: "sftp",
            SFTP_HOST: "127.0.0.1",
            SFTP_PORT: String(port),
            SFTP_AUTH_METHOD: "PUBLIC_KEY_FILE",
            SFTP_USERNAME: user,
            SFTP_PUBLIC_KEY_FILE: `${dir}/client_ed25519`,
            SFTP_CACHE_ROOT: cacheRoot,
            SFTP_HOST_KEY_FINGERPRINT: fingerprint,
          },
          host: "127.0.0.1",
          port,
          user,
          passwordUser: isRoot ? { name: SFTP_TEST_USER, password: SFTP_TEST_PASSWORD } : undefined,
          clientKeyFile: `${dir}/client_ed25519`,
          encryptedKeyFile: `${dir}/client_encrypted`,
          clientKeyPassphrase: passphrase,
          otherKeyFile: `${dir}/other_ed25519`,
          hostKeyFingerprint: fingerprint,
          knownHostsFile,
          cacheRoot,
          sshCommand:
            `ssh -q -o BatchMode=yes -o UserKnownHostsFile=${knownHostsFile} -o StrictHostKeyChecking=yes ` +
            `-i ${dir}/client_ed25519 -p ${port} ${isRoot ? "root" : user}@127.0.0.1`,
          dir,
          dropSessions,
          freezeSessions,
          stop,
        };
      }
      const stray = await sshdPid();
      try {
        if (stray) Deno.kill(stray, "SIGKILL");
      } catch { /* already gone */ }
      try {
        if (!exited) child.kill("SIGKILL");
      } catch { /* already gone */ }
      await status;
      lastLog = await Deno.readTextFile(logPath).catch(() => "");
      if (!/Address already in use/.test(lastLog)) break; // only a lost port race is worth another try
    }
    throw new Error(`sshd did not start. Its log:\n${lastLog.slice(-2000)}`);
  } catch (err) {
    if (!options.keepDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
}

if (import.meta.main) {
  const sshd = await startSshd();
  for (const [k, v] of Object.entries(sshd.env)) console.log(`export ${k}=${JSON.stringify(v)}`);
  if (sshd.passwordUser) {
    console.log(`# password login: ${sshd.passwordUser.name} / ${sshd.passwordUser.password}`);
  }
  console.log(`# sshd config, keys and log: ${sshd.dir}; Ctrl-C stops it`);
  const done = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", () => done.resolve());
  Deno.addSignalListener("SIGTERM", () => done.resolve());
  await done.promise;
  await sshd.stop();
}
