/**
 * Bench rows for glob mounts (part of `deno task bench`, or alone with
 * `deno run -A scripts/bench_glob.ts`): expansion time of ordinary and
 * pathological patterns on a deep tree (a 60-level chain of 40-character
 * `a…a` directories, with siblings and a `zz` file per level) and on a
 * monorepo-like tree. Pathological patterns are the ones that make
 * backtracking matchers explode (`a*a*a*…b` against names of `a`s, stacked
 * `**`, stacked `*` segments, brace-star chains); they must stay bounded.
 *
 * @module
 */
import { join } from "node:path";
import { globMatches, loadGlobEngine } from "../lib/cache/mounts.ts";

await loadGlobEngine(["*"]); // picomatch is loaded on demand; these rows match globs synchronously

/** One measured pattern. */
export interface GlobRow {
  tree: string;
  pattern: string;
  matches: number;
  seconds: number;
}

function deepTree(root: string): number {
  const name = "a".repeat(40);
  let p = root;
  let entries = 0;
  for (let d = 0; d < 60; d++) {
    for (const s of ["b", "c"]) Deno.mkdirSync(`${p}/${s}${d}`, { recursive: true });
    Deno.writeTextFileSync(`${p}/zz`, "x");
    Deno.writeTextFileSync(`${p}/${name}.txt`, "x");
    p = `${p}/${name}`;
    Deno.mkdirSync(p, { recursive: true });
    entries += 5;
  }
  return entries;
}

function monorepoTree(root: string): number {
  let entries = 0;
  for (let i = 0; i < 200; i++) {
    const pkg = join(root, "packages", `pkg-${i}`);
    for (let j = 0; j < 10; j++) {
      Deno.mkdirSync(join(pkg, "node_modules", `dep-${j}`, "lib"), { recursive: true });
    }
    Deno.mkdirSync(join(pkg, "src", "components"), { recursive: true });
    Deno.writeTextFileSync(join(pkg, "package.json"), "{}");
    entries += 25;
  }
  return entries;
}

/** Runs every pattern on both trees; returns the rows (and prints them). */
export function benchGlob(dir: string): GlobRow[] {
  const rows: GlobRow[] = [];
  const trees: [string, string, () => number][] = [
    ["deep", join(dir, "deep"), () => deepTree(join(dir, "deep"))],
    ["monorepo", join(dir, "mono"), () => monorepoTree(join(dir, "mono"))],
  ];
  const patterns: Record<string, string[]> = {
    deep: [
      "**/zz",
      "**/**/**/**/**/**/**/**/**/**/zz",
      "**/a*a*a*a*a*a*a*a*a*a*a*a*b",
      "**/*/*/*/*/*/*/*/*/*/*/*/zz",
      "**/*a*a*a*a*a*a*a*a*a*a*a*a*a*a*/zz",
      "**/{a,b}*{a,b}*{a,b}*{a,b}*{a,b}*{a,b}*{a,b}*c",
    ],
    monorepo: [
      "packages/*/node_modules",
      "packages/**/node_modules",
      "**/node_modules",
      "packages/{pkg-1,pkg-2}*/src",
    ],
  };
  console.log("glob tree      matches  seconds  pattern");
  for (const [name, root, build] of trees) {
    Deno.mkdirSync(root, { recursive: true });
    build();
    for (const pattern of patterns[name]) {
      const t = performance.now();
      const matches = globMatches(pattern, { cwd: root, env: {} }).length;
      const row = { tree: name, pattern, matches, seconds: (performance.now() - t) / 1000 };
      rows.push(row);
      console.log(
        `glob ${name.padEnd(9)} ${String(matches).padStart(7)} ${
          row.seconds.toFixed(3).padStart(8)
        }  ${pattern}`,
      );
    }
  }
  return rows;
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "cicache-bench-glob-" });
  try {
    benchGlob(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
