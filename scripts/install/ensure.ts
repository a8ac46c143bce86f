/**
 * Install on first use: every test server module (`scripts/servers/*.ts`)
 * calls {@link ensureInstalled} at the start of its start function, so
 * `deno task test` works on a fresh machine with only Deno (and Node/npm for
 * the GCS emulator) installed. It runs `scripts/install/<name>.sh` once per
 * process; each script is idempotent, prints nothing when the server is
 * already there, and otherwise installs it (Swift with apt-get as root,
 * Azurite into Deno's npm cache, the GCS emulator with npm into `.servers/`)
 * or fails with one line that says what to do (not root, no apt, no npm).
 *
 * `CI_CACHE_FORCE_INSTALL=swift,azurite,gcs-emulator` (or `all`) makes the
 * scripts treat those servers as missing and take the install path anyway:
 * how the first-use path is exercised on a machine that has them.
 *
 * Run alone (`deno task setup`, also called by `.ci/run` to warm the caches)
 * it installs every server.
 *
 * @module
 */

/** The test servers that have an install script (`scripts/install/<name>.sh`). */
export const INSTALLABLE = ["swift", "azurite", "gcs-emulator"] as const;
/** One of {@link INSTALLABLE}. */
export type Installable = typeof INSTALLABLE[number];

const scripts = new URL("./", import.meta.url).pathname;
const once = new Map<Installable, Promise<void>>();

/** Runs one install script; resolves when the server is there, rejects with the script's message. */
async function install(name: Installable): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: [`${scripts}${name}.sh`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  // Installing for real is worth one line on stderr; "already there" says nothing.
  if (text(out.stdout)) console.error(text(out.stdout));
  if (!out.success) {
    const why = text(out.stderr).split("\n").filter((l) => l.trim()).slice(-5).join("\n") ||
      `exit code ${out.code}`;
    throw new Error(
      `${name} is needed by the tests and could not be installed (scripts/install/${name}.sh):\n${why}`,
    );
  }
}

/**
 * Makes sure a test server is installed, installing it on first use (once
 * per process; later calls share the first result).
 *
 * @example
 * ```ts
 * await ensureInstalled("swift"); // quiet when Swift is there; apt-get install as root when not
 * ```
 */
export function ensureInstalled(name: Installable): Promise<void> {
  let pending = once.get(name);
  if (!pending) {
    pending = install(name);
    once.set(name, pending);
  }
  return pending;
}

if (import.meta.main) {
  const names = Deno.args.length ? Deno.args : [...INSTALLABLE];
  let failed = false;
  for (const name of names) {
    if (!(INSTALLABLE as readonly string[]).includes(name)) {
      console.error(`unknown server ${name}: one of ${INSTALLABLE.join(", ")}`);
      Deno.exit(2);
    }
    try {
      await ensureInstalled(name as Installable);
    } catch (err) {
      console.error((err as Error).message);
      failed = true;
    }
  }
  Deno.exit(failed ? 1 : 0);
}
