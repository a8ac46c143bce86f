/**
 * Install on first use (scripts/install/ensure.ts and the install scripts):
 * quiet and successful when a server is there, one clear line when it is
 * missing and cannot be installed (not root, no apt-get). The "missing" case
 * is simulated with `CI_CACHE_FORCE_INSTALL`, which makes a script take its
 * install path although the server is installed.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { ensureInstalled } from "../scripts/install/ensure.ts";

const root = new URL("../", import.meta.url).pathname;
const isRoot = Deno.uid() === 0;
const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();

async function sh(args: string[], env: Record<string, string> = {}, clearEnv = false) {
  const out = await new Deno.Command(args[0], {
    args: args.slice(1),
    cwd: root,
    env,
    clearEnv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Runs a command as `nobody` (a user without root rights) with a clean environment. */
function asNobody(args: string[], env: Record<string, string>) {
  return sh(
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...args],
    { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", ...env },
    true,
  );
}

Deno.test("install: every script is quiet and succeeds when its server is there (twice: idempotent)", async () => {
  for (const name of ["swift", "azurite"]) {
    for (let round = 0; round < 2; round++) {
      const r = await sh(["bash", `scripts/install/${name}.sh`], { CI_CACHE_FORCE_INSTALL: "" });
      assertEquals(r, { code: 0, stdout: "", stderr: "" }, `${name}.sh round ${round}`);
    }
  }
  // ensureInstalled runs the script once per process: the second call shares the first result.
  const first = ensureInstalled("swift");
  assert(first === ensureInstalled("swift"), "ensureInstalled is memoized");
  await first;
});

Deno.test({
  name: "install: swift missing and not root: one line that says to run the script as root",
  ignore: !isRoot, // needs root to switch to an unprivileged user
  async fn() {
    const r = await asNobody(["bash", "scripts/install/swift.sh"], { CI_CACHE_FORCE_INSTALL: "swift" });
    assertEquals(r.code, 1);
    assertEquals(r.stdout, "");
    assertEquals(r.stderr.split("\n").length, 1, r.stderr);
    assertStringIncludes(r.stderr, "installing it needs root: run 'sudo bash scripts/install/swift.sh' once");
  },
});

Deno.test({
  name: "install: ensure.ts names the server and passes the script's reason on (as a non-root user)",
  ignore: !isRoot,
  async fn() {
    const denoDir = await Deno.makeTempDir();
    await Deno.chown(denoDir, 65534, 65534);
    try {
      const r = await asNobody([
        Deno.execPath(),
        "run",
        "-A",
        "--no-config",
        "scripts/install/ensure.ts",
        "swift",
      ], {
        CI_CACHE_FORCE_INSTALL: "swift",
        DENO_DIR: denoDir,
        NO_COLOR: "1",
      });
      assertEquals(r.code, 1, r.stderr);
      assertStringIncludes(r.stderr, "swift is needed by the tests and could not be installed");
      assertStringIncludes(r.stderr, "needs root");
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  },
});

Deno.test("install: swift missing and no apt-get: one line that says to use the package manager", async () => {
  // A PATH with only what the script needs besides apt-get.
  const bin = await Deno.makeTempDir();
  try {
    for (const tool of ["bash", "dirname", "id"]) {
      const found = (await sh(["bash", "-c", `command -v ${tool}`])).stdout;
      await Deno.symlink(found, `${bin}/${tool}`);
    }
    const r = await sh([`${bin}/bash`, "scripts/install/swift.sh"], {
      PATH: bin,
      CI_CACHE_FORCE_INSTALL: "swift",
    }, true);
    assertEquals(r.code, 1);
    assertEquals(r.stderr.split("\n").length, 1, r.stderr);
    assertStringIncludes(r.stderr, "apt-get is not available: install swift swift-proxy");
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("install: CI_CACHE_FORCE_INSTALL matches whole names only", async () => {
  const forced = async (value: string, name: string) =>
    (await sh(["bash", "-c", `source scripts/install/common.sh; forced ${name}`], {
      CI_CACHE_FORCE_INSTALL: value,
    })).code === 0;
  assert(await forced("swift", "swift"));
  assert(await forced("azurite,swift", "swift"));
  assert(await forced("all", "gcs-emulator"));
  assert(!(await forced("swiftly", "swift")));
  assert(!(await forced("", "azurite")));
});
