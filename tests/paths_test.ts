/**
 * The confinement rule for paths from a cache object (`lib/archive/paths.ts`):
 * `insideRoot`'s fast path for plain names must answer exactly as the
 * segment rule does, for every name a hostile archive could carry.
 */
import { assertEquals } from "./assert.ts";
import { cleanPath, insideRoot, pathSegments } from "../lib/archive/paths.ts";

/** The segment rule alone, as `insideRoot` states it (the oracle). */
function bySegments(name: string, root: string): string | null {
  if (name.startsWith("/") !== root.startsWith("/")) return null;
  const n = pathSegments(name);
  const r = pathSegments(root);
  if (n === null || r === null || n.length < r.length) return null;
  for (let i = 0; i < r.length; i++) if (n[i] !== r[i]) return null;
  return n.slice(r.length).join("/");
}

Deno.test("paths: insideRoot answers as the segment rule for every combination of hostile segments and roots", () => {
  const roots = [
    "/w/m",
    "/w/m/",
    "/w/./m",
    "/w//m",
    "/",
    ".",
    "./m",
    "m",
    "m/",
    "/w/m/..",
    "/w/a\\..\\m",
    "/w/m\0",
  ];
  const segments = ["a", "..", ".", "", "b\\..\\c", "x\0y", "ünï", "...", ".a", "a.", "\\", "..\\", "m", "w"];
  let checked = 0;
  let inside = 0;
  for (const root of roots) {
    const bases = new Set([root, root.replace(/\/+$/, ""), `${root}/`, `${root}//`, `/${root}`, ""]);
    for (const base of bases) {
      const paths: string[] = [""];
      for (let depth = 0; depth < 3; depth++) {
        for (const p of paths.splice(0)) {
          for (const seg of segments) paths.push(p === "" ? seg : `${p}/${seg}`);
        }
        for (const rest of paths) {
          for (const name of [base === "" ? rest : `${base}/${rest}`, `${base}${rest}`]) {
            const want = bySegments(name, root);
            assertEquals(
              insideRoot(name, root),
              want,
              `insideRoot(${JSON.stringify(name)}, ${JSON.stringify(root)})`,
            );
            checked++;
            if (want !== null) inside++;
          }
        }
      }
    }
  }
  // Both answers occur in quantity: the comparison covers the fast path and the refusals.
  assertEquals(
    checked > 100_000 && inside > 10_000 && checked - inside > 10_000,
    true,
    `${checked} ${inside}`,
  );
});

Deno.test("paths: the usual names and the refusals", () => {
  assertEquals(insideRoot("/w/m/a/b", "/w/m"), "a/b");
  assertEquals(insideRoot("/w/m", "/w/m"), "");
  assertEquals(insideRoot("/w/m/../x", "/w/m"), null);
  assertEquals(insideRoot("/w/mx/a", "/w/m"), null);
  assertEquals(insideRoot("w/m/a", "/w/m"), null);
  assertEquals(insideRoot("/w/m/a\\..\\..\\x", "/w/m"), null);
  assertEquals(insideRoot("/a", "/"), "a");
  assertEquals(insideRoot("m/a//b/./c/", "./m"), "a/b/c");
  assertEquals(cleanPath("./node_modules/"), "node_modules");
});
