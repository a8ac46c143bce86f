/**
 * Client cost of the S3 and Azure backends on the same data (docs/azure.md):
 * moves one file through `scripts/bench_transfer.ts put|get` against Swift
 * and Azurite, alternating the backends, and prints ci-cache's own CPU
 * (user + sys of the helper process, from `/usr/bin/time`; the servers run
 * in their own processes) per GB moved, net of the same helper's `stat`
 * (start-up, settings, one request). Both backends use their defaults:
 * 16 MiB parts/blocks, 8 MiB download ranges, 4 in flight. Wall time is
 * printed too, but on Azurite it is the server's speed, not ours.
 *
 * Usage: `deno run -A scripts/bench_clients.ts <file> [repeats=5]`
 * (for instance the tar of the bench tree: `tar -cf /tmp/t.tar -C .bench/tree-s1 cache`).
 *
 * @module
 */
import { join, resolve } from "node:path";
import { startSwift } from "./servers/swift.ts";
import { startAzurite } from "./servers/azurite.ts";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const HELPER = join(ROOT, "scripts", "bench_transfer.ts");

interface Step {
  wall: number;
  cpu: number;
}

async function run(op: string, object: string, file: string, env: Record<string, string>): Promise<Step> {
  const stats = await Deno.makeTempFile();
  const started = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-o", stats, "-f", "%U %S", Deno.execPath(), "run", "-A", HELPER, op, object, file],
    env: { ...Deno.env.toObject(), ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wall = (performance.now() - started) / 1000;
  if (!out.success) throw new Error(`${op} ${object}: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
  const [user, sys] = (await Deno.readTextFile(stats)).trim().split(/\s+/).slice(-2).map(Number);
  await Deno.remove(stats);
  return { wall, cpu: user + sys };
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

if (import.meta.main) {
  const [file, repeats = "5"] = Deno.args;
  if (!file) throw new Error("usage: bench_clients.ts <file> [repeats]");
  const gb = (await Deno.stat(file)).size / 1e9;
  const servers = { s3: await startSwift(), azure: await startAzurite({ onDisk: true }) };
  const perGb = {
    s3: { put: [] as number[], get: [] as number[] },
    azure: { put: [] as number[], get: [] as number[] },
  };
  const scratch = await Deno.makeTempDir({ prefix: "bench-clients-" });
  try {
    for (let i = 0; i < Number(repeats); i++) {
      for (const b of ["s3", "azure"] as const) {
        const env = servers[b].env;
        const object = `bench-clients-${i}-${Date.now()}/cache`;
        const base = await run("stat", object, "/dev/null", env);
        const put = await run("put", object, file, env);
        const get = await run("get", object, join(scratch, b), env);
        await Deno.remove(join(scratch, b));
        perGb[b].put.push((put.cpu - base.cpu) / gb);
        perGb[b].get.push((get.cpu - base.cpu) / gb);
        console.log(
          `${b.padEnd(5)} #${i} start-up+stat ${base.cpu.toFixed(2)} s CPU; put ${
            put.cpu.toFixed(2)
          } s CPU ` +
            `(${put.wall.toFixed(1)} s wall); get ${get.cpu.toFixed(2)} s CPU (${
              get.wall.toFixed(1)
            } s wall)`,
        );
      }
    }
  } finally {
    await servers.s3.stop();
    await servers.azure.stop();
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
  for (const op of ["put", "get"] as const) {
    const [a, s] = [median(perGb.azure[op]), median(perGb.s3[op])];
    const list = (x: number[]) => x.map((v) => v.toFixed(2)).join(" ");
    console.log(
      `${op}: transfer CPU s/GB, median of ${repeats}: Azure ${a.toFixed(2)} (${list(perGb.azure[op])}), ` +
        `S3 ${s.toFixed(2)} (${list(perGb.s3[op])}); Azure / S3 = ${(a / s).toFixed(2)}`,
    );
  }
}
