/**
 * A watchdog per test server process: a tiny shell loop in its own session
 * (so a Ctrl-C to the test run's process group does not take it down first)
 * that checks once a second whether the test process that started the
 * server is still alive, and stops the server (TERM, then KILL) and removes
 * its temp dir when it is not. A run that is interrupted or killed (even
 * `kill -9`) leaves no orphaned Swift, Azurite or emulator process behind.
 * When the server stops normally the watchdog ends by itself.
 *
 * @module
 */

/**
 * Starts a watchdog for `childPid`, tied to this process (`Deno.pid`).
 *
 * @example
 * ```ts
 * const child = new Deno.Command("node", { args: ["server.mjs"] }).spawn();
 * watchdog(child.pid, tempDir);
 * ```
 */
export function watchdog(childPid: number, cleanupDir?: string): void {
  const parent = Deno.pid;
  const dir = cleanupDir && /^[\w./-]+$/.test(cleanupDir) ? cleanupDir : undefined;
  const script =
    `while kill -0 ${parent} 2>/dev/null; do kill -0 ${childPid} 2>/dev/null || exit 0; sleep 1; done; ` +
    `kill -TERM ${childPid} 2>/dev/null; sleep 3; kill -KILL ${childPid} 2>/dev/null; ` +
    (dir ? `rm -rf '${dir}'; ` : "") + "exit 0";
  for (const [cmd, args] of [["setsid", ["sh", "-c", script]], ["sh", ["-c", script]]] as const) {
    try {
      new Deno.Command(cmd, { args: [...args], stdin: "null", stdout: "null", stderr: "null" }).spawn()
        .unref();
      return;
    } catch {
      // no setsid: fall back to a plain shell
    }
  }
}
