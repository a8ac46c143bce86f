/**
 * `deno task demo`: saves a sample directory to the filesystem backend,
 * deletes it, restores it, checks it came back identical, and prints what
 * happened at each step. Everything lives in a temporary directory that is
 * removed at the end.
 *
 * @module
 */
import { join } from "node:path";
import { run } from "../main.ts";

const work = await Deno.makeTempDir({ prefix: "ci-cache-demo-" });
const project = join(work, "project");
const cacheRoot = join(work, "cache-volume");

async function write(path: string, text: string): Promise<void> {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  await Deno.writeTextFile(path, text);
}

async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string, rel: string) {
    for await (const e of Deno.readDir(d)) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isSymlink) out.push(`${r} -> ${await Deno.readLink(join(d, e.name))}`);
      else if (e.isDirectory) await walk(join(d, e.name), r);
      else out.push(`${r} (${(await Deno.readTextFile(join(d, e.name))).length} bytes)`);
    }
  }
  await walk(dir, "");
  return out.sort();
}

function step(text: string): void {
  console.log(`\n\x1b[1m▶ ${text}\x1b[0m`);
}

try {
  await Deno.mkdir(cacheRoot, { recursive: true });
  await write(join(project, "package-lock.json"), '{"lockfileVersion": 3}\n');
  await write(join(project, "node_modules/left-pad/index.js"), "module.exports = (s, n) => s.padStart(n);\n");
  await write(
    join(project, "node_modules/left-pad/package.json"),
    '{"name": "left-pad", "version": "1.3.0"}\n',
  );
  await write(join(project, "node_modules/.bin/.keep"), "");
  await Deno.symlink("../left-pad/index.js", join(project, "node_modules/.bin/left-pad"));
  const before = await snapshot(join(project, "node_modules"));

  const env = {
    PLUGIN_BACKEND: "filesystem",
    PLUGIN_FILESYSTEM_CACHE_ROOT: cacheRoot,
    PLUGIN_MOUNT: "node_modules",
    PLUGIN_ARCHIVE_FORMAT: "zstd",
    PLUGIN_CACHE_KEY: "demo-key",
    DRONE_COMMIT_BRANCH: "main",
  };
  console.log(
    `sample project: ${project}\ncache volume:   ${cacheRoot}\nnode_modules:\n  ${before.join("\n  ")}`,
  );

  step("save: PLUGIN_REBUILD=true (a Drone step after the build)");
  let code = await run([], { ...env, PLUGIN_REBUILD: "true" }, { cwd: project });
  console.log(`exit code ${code}; cache volume now holds:`);
  for (const f of await snapshot(cacheRoot)) console.log(`  ${f.replace(/ \(\d+ bytes\)$/, "")}`);

  step("delete node_modules (a fresh CI workspace)");
  await Deno.remove(join(project, "node_modules"), { recursive: true });

  step("restore: PLUGIN_RESTORE=true (a Drone step before the build)");
  const outputs = join(work, "drone-output.env");
  code = await run([], { ...env, PLUGIN_RESTORE: "true", DRONE_OUTPUT: outputs }, { cwd: project });
  console.log(
    `exit code ${code}; step outputs ($DRONE_OUTPUT):\n  ${
      (await Deno.readTextFile(outputs)).trim().replaceAll("\n", "\n  ")
    }`,
  );

  const after = await snapshot(join(project, "node_modules"));
  const same = JSON.stringify(before) === JSON.stringify(after);
  step(
    same ? "node_modules restored identically (files and symlinks)" : "node_modules differs after restore!",
  );
  if (!same) {
    console.log(`after:\n  ${after.join("\n  ")}`);
    Deno.exitCode = 1;
  }

  step("restore with a key that was never saved: a miss is a warning, exit code 0");
  code = await run(["restore", "--cache-key=never-saved", "node_modules"], env, { cwd: project });
  console.log(`exit code ${code}`);
} finally {
  await Deno.remove(work, { recursive: true });
}
