/**
 * The distribution files parse and agree with what `scripts/release.ts`
 * builds: plugin.yml (Harness binary plugin manifest), the release workflow,
 * and the Dockerfiles (a structural check: parser rules Docker enforces, exec
 * form entrypoints, the binary path the release writes, a non-root user in
 * the rootless variants).
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./assert.ts";
import { parse } from "../lib/deps/yaml.ts";
import { assetName, TARGETS } from "../scripts/release.ts";

const root = new URL("../", import.meta.url).pathname;
const read = (rel: string) => Deno.readTextFile(`${root}${rel}`);

// deno-lint-ignore no-explicit-any
type Yaml = any;

function parseYaml(text: string, file: string): Yaml {
  try {
    return parse(text, { strict: true, uniqueKeys: true });
  } catch (err) {
    throw new Error(`${file} is not valid YAML: ${(err as Error).message}`);
  }
}

Deno.test("distribution: plugin.yml is Harness' binary plugin layout and names exactly the release's assets", async () => {
  const doc = parseYaml(await read("plugin.yml"), "plugin.yml");
  assertEquals(Object.keys(doc), ["run"]);
  const source: string = doc.run.binary.source;
  assertMatch(
    source,
    /^https:\/\/github\.com\/[\w.-]+\/[\w.-]+\/releases\/download\/\{\{ release \}\}\/plugin-\{\{ os \}\}-\{\{ arch \}\}\.zst$/,
  );
  for (const t of TARGETS) {
    const url = source.replace("{{ release }}", "v1.2.3").replace("{{ os }}", t.os).replace(
      "{{ arch }}",
      t.arch,
    );
    assert(url.endsWith(`/v1.2.3/${assetName(t)}`), url);
  }
});

Deno.test("distribution: the release workflow parses, runs the tests, the strict release and every Dockerfile", async () => {
  const text = await read(".github/workflows/release.yml");
  const wf = parseYaml(text, "release.yml");
  assertEquals(wf.on.push.tags, ["v*"]);
  assertEquals(Object.keys(wf.jobs).sort(), ["assets", "docker", "test"]);
  for (const [name, job] of Object.entries<Yaml>(wf.jobs)) {
    assert(typeof job["runs-on"] === "string", `${name}: runs-on`);
    assert(Array.isArray(job.steps) && job.steps.length > 0, `${name}: steps`);
    for (const step of job.steps) {
      assert(("run" in step) !== ("uses" in step), `${name}: a step has run xor uses`);
    }
  }
  const runs = (job: string) => wf.jobs[job].steps.map((s: Yaml) => s.run ?? "").join("\n");
  assertStringIncludes(runs("test"), "bash .ci/run");
  assertEquals(wf.jobs.assets.needs, "test");
  assertStringIncludes(runs("assets"), "deno task release --strict");
  assertStringIncludes(runs("assets"), "sha256sum -c SHA256SUMS");
  assertStringIncludes(runs("assets"), "gh release upload");
  assertEquals(wf.jobs.docker.needs, "assets");
  for await (const e of Deno.readDir(`${root}docker`)) {
    assertStringIncludes(runs("docker"), `-f docker/${e.name} `, `the workflow builds docker/${e.name}`);
  }
});

const INSTRUCTIONS = new Set([
  "FROM",
  "RUN",
  "CMD",
  "LABEL",
  "EXPOSE",
  "ENV",
  "ADD",
  "COPY",
  "ENTRYPOINT",
  "VOLUME",
  "USER",
  "WORKDIR",
  "ARG",
  "ONBUILD",
  "STOPSIGNAL",
  "HEALTHCHECK",
  "SHELL",
]);

/** Instructions of a Dockerfile: comments and blank lines dropped, `\` continuations joined. */
function dockerInstructions(text: string): { keyword: string; args: string }[] {
  const out: { keyword: string; args: string }[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!pending && (line === "" || line.startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    const full = (pending + line).trim();
    pending = "";
    const m = /^(\S+)\s+(.*)$/.exec(full);
    if (!m) throw new Error(`instruction without arguments: ${full}`);
    out.push({ keyword: m[1], args: m[2] });
  }
  if (pending) throw new Error("the last line ends with a continuation");
  return out;
}

Deno.test("distribution: Dockerfiles: FROM first, known instructions, exec-form entrypoint, the release's binary", async () => {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${root}docker`)) names.push(e.name);
  assertEquals(names.sort(), [
    "Dockerfile.linux.amd64",
    "Dockerfile.linux.arm64",
    "Dockerfile.rootless.linux.amd64",
    "Dockerfile.rootless.linux.arm64",
  ]);
  for (const name of names) {
    const [, rootless, arch] = /^Dockerfile\.(rootless\.)?linux\.(amd64|arm64)$/.exec(name)!;
    const ins = dockerInstructions(await read(`docker/${name}`));
    for (const i of ins) assert(INSTRUCTIONS.has(i.keyword), `${name}: unknown instruction ${i.keyword}`);
    const first = ins.find((i) => i.keyword !== "ARG");
    assertEquals(first?.keyword, "FROM", `${name}: FROM comes first`);
    assertStringIncludes(first!.args, `--platform=linux/${arch} `, `${name}: platform`);
    const entry = ins.filter((i) => i.keyword === "ENTRYPOINT");
    assertEquals(entry.length, 1, `${name}: one ENTRYPOINT`);
    const argv = JSON.parse(entry[0].args);
    assertEquals(argv, ["/bin/ci-cache"], `${name}: exec form, the binary`);
    const copy = ins.find((i) => i.keyword === "COPY");
    assert(TARGETS.some((t) => t.os === "linux" && t.arch === arch), `${name}: a release target`);
    assertEquals(copy?.args, `--chmod=0755 dist/bin/ci-cache-linux-${arch} /bin/ci-cache`, `${name}: COPY`);
    assert(
      !ins.some((i) => i.keyword === "RUN"),
      `${name}: nothing runs at build time (no shell in the base)`,
    );
    const users = ins.filter((i) => i.keyword === "USER").map((i) => i.args.trim());
    if (rootless) {
      assertEquals(users.length, 1, `${name}: sets a user`);
      assert(!/^(root|0)(:|$)/.test(users[0]), `${name}: the user is not root`);
      assertStringIncludes(first!.args, ":nonroot", `${name}: the nonroot base`);
    } else {
      assertEquals(users, [], `${name}: runs as the image's default user`);
    }
  }
  // The build context lets exactly the binaries in.
  assertEquals((await read(".dockerignore")).split("\n").filter((l) => l && !l.startsWith("#")), [
    "*",
    "!dist/bin/",
  ]);
});

Deno.test("distribution: the Dockerfile check rejects what Docker rejects", () => {
  const bad = (text: string) => {
    const ins = dockerInstructions(text);
    const first = ins.find((i) => i.keyword !== "ARG");
    return first?.keyword !== "FROM" || ins.some((i) => !INSTRUCTIONS.has(i.keyword));
  };
  assert(bad("COPY a /b\nFROM scratch\n"));
  assert(bad("FROM scratch\nCOPYY a /b\n"));
  assert(!bad("ARG V=1\nFROM scratch\nCOPY a \\\n  /b\n"));
});
