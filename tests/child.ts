/**
 * Helpers for tests that run the CLI as a child process (`deno run -A
 * main.ts`) and interrupt it: random trees, a recursive listing, and
 * {@link interrupt}.
 *
 * @module
 */

export const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Writes `files` files of `size` random (incompressible) bytes under `dir`. */
export async function writeRandomTree(dir: string, files: number, size: number) {
  await Deno.mkdir(dir, { recursive: true });
  const chunk = new Uint8Array(size);
  for (let i = 0; i < files; i++) {
    for (let o = 0; o < size; o += 65536) {
      crypto.getRandomValues(chunk.subarray(o, Math.min(size, o + 65536)));
    }
    await Deno.writeFile(`${dir}/f${i}.bin`, chunk);
  }
}

/** Every path under `dir`, recursively. */
export async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    out.push(p);
    if (e.isDirectory) out.push(...await walk(p));
  }
  return out;
}

/** Starts the CLI as a child, waits until `ready()` says the transfer is under way, then sends `signal`. */
export async function interrupt(
  env: Record<string, string>,
  cwd: string,
  ready: () => Promise<boolean>,
  signal: Deno.Signal,
): Promise<{ code: number; stderr: string; sent: boolean }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN],
    env: { ...env, NO_COLOR: "1" },
    cwd,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let sent = false;
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 120_000;
  while (!exited && Date.now() < deadline) {
    if (await ready()) {
      child.kill(signal);
      sent = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const status = await child.status;
  return { code: status.code, stderr: await stderr, sent };
}
