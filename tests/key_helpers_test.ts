/**
 * Tests of the key template helpers (`lib/key/helpers.ts`) on real files in
 * temporary directories. Expected digests come from the system's `md5sum`
 * and `sha256sum`, not from the code under test.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  checksumFile,
  epochSeconds,
  globFiles,
  goArch,
  goOs,
  hashFiles,
  keyFunctions,
} from "../lib/key/helpers.ts";
import { parseTemplate } from "../lib/key/template.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "./assert.ts";
import { capture } from "./support.ts";

async function tool(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "inherit" }).output();
  assert(out.success, `${cmd} ${args.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout);
}

/** The first field of `md5sum`/`sha256sum` output. */
async function digestWith(cmd: "md5sum" | "sha256sum", path: string): Promise<string> {
  return (await tool(cmd, path)).split(/\s+/)[0];
}

/** hashFiles as specified, computed from `sha256sum` output of each file in the given order. */
async function expectedHash(files: string[]): Promise<string> {
  const h = createHash("sha256");
  for (const f of files) h.update(Buffer.from(await digestWith("sha256sum", f), "hex"));
  return h.digest("hex");
}

async function tree(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "ci-cache-key-helpers-" });
  for (const [rel, content] of Object.entries(files)) {
    await Deno.mkdir(join(root, rel, ".."), { recursive: true });
    await Deno.writeTextFile(join(root, rel), content);
  }
  return root;
}

const LOCKS = {
  "package-lock.json": "root lock\n",
  "a/package-lock.json": "a lock\n",
  "b/c/package-lock.json": "b/c lock\n",
  "d/yarn.lock": "yarn\n",
  "node_modules/x/package-lock.json": "dependency lock\n",
  ".git/package-lock.json": "not a real one\n",
  "b/.hidden/package-lock.json": "hidden\n",
};

Deno.test("checksum: MD5 hex of the file content, as md5sum", async () => {
  const root = await tree({ "go.sum": "github.com/x/y v1.0.0 h1:abc=\n", "empty": "" });
  try {
    assertEquals(await checksumFile("go.sum", root), await digestWith("md5sum", join(root, "go.sum")));
    assertEquals(
      await checksumFile(join(root, "go.sum"), "/"),
      await digestWith("md5sum", join(root, "go.sum")),
    );
    assertEquals(await checksumFile("empty", root), "d41d8cd98f00b204e9800998ecf8427e");
    // Through the template engine, relative to the helper's working directory.
    const t = parseTemplate('{{ checksum "go.sum" }}', {
      name: "cacheKey",
      funcs: keyFunctions({ cwd: root }),
    });
    assertEquals(await t.execute(null), await digestWith("md5sum", join(root, "go.sum")));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("checksum: a multi-chunk file (5 MiB + 7 bytes) is hashed whole", async () => {
  const root = await tree({});
  try {
    const path = join(root, "big.bin");
    const chunk = new Uint8Array(1024 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7919) & 0xff;
    const f = await Deno.open(path, { write: true, create: true });
    for (let i = 0; i < 5; i++) await f.write(chunk);
    await f.write(new Uint8Array([1, 2, 3, 4, 5, 6, 7]));
    f.close();
    assertEquals(await checksumFile("big.bin", root), await digestWith("md5sum", path));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("checksum: a missing file is an error naming the path and the working directory", async () => {
  const root = await tree({});
  try {
    const err = await assertRejects(() => checksumFile("missing.lock", root));
    assertStringIncludes(err.message, '"missing.lock"');
    assertStringIncludes(err.message, "no such file");
    assertStringIncludes(err.message, root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: ** recursion, sorted order, node_modules and .git skipped", async () => {
  const root = await tree(LOCKS);
  try {
    const files = await globFiles(["**/package-lock.json"], root);
    assertEquals(files, [
      join(root, "a/package-lock.json"),
      join(root, "b/.hidden/package-lock.json"),
      join(root, "b/c/package-lock.json"),
      join(root, "package-lock.json"),
    ]);
    assertEquals(await hashFiles(["**/package-lock.json"], { cwd: root }), await expectedHash(files));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: several patterns, deduplicated, order of patterns does not matter", async () => {
  const root = await tree(LOCKS);
  try {
    const want = await expectedHash([
      join(root, "a/package-lock.json"),
      join(root, "d/yarn.lock"),
      join(root, "package-lock.json"),
    ]);
    const { log } = capture();
    assertEquals(
      await hashFiles(["*/package-lock.json", "d/*.lock", "package-lock.json"], { cwd: root, log }),
      want,
    );
    assertEquals(
      await hashFiles(["package-lock.json", "d/yarn.loc?", "[a]/package-lock.json"], { cwd: root, log }),
      want,
    );
    assertEquals(
      await hashFiles(["package-lock.json", "*.json", "./package-lock.json"], { cwd: root, log }),
      await expectedHash([join(root, "package-lock.json")]),
    );
    // Several arguments through the template engine.
    const t = parseTemplate('{{ hashFiles "package-lock.json" "d/*.lock" "a/*.json" }}', {
      funcs: keyFunctions({ cwd: root, log }),
    });
    assertEquals(await t.execute(null), want);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: node_modules and .git are searched when the pattern names them", async () => {
  const root = await tree(LOCKS);
  try {
    assertEquals(await globFiles(["node_modules/**/package-lock.json"], root), [
      join(root, "node_modules/x/package-lock.json"),
    ]);
    assertEquals(await globFiles(["**/node_modules/*/package-lock.json"], root), [
      join(root, "node_modules/x/package-lock.json"),
    ]);
    assertEquals(await globFiles([".git/*.json"], root), [join(root, ".git/package-lock.json")]);
    assertEquals(await globFiles(["b/**"], root), [
      join(root, "b/.hidden/package-lock.json"),
      join(root, "b/c/package-lock.json"),
    ]);
    assertEquals(await globFiles([join(root, "d", "*")], "/"), [join(root, "d/yarn.lock")]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: the digest changes when a matched file changes", async () => {
  const root = await tree(LOCKS);
  try {
    const before = await hashFiles(["**/package-lock.json"], { cwd: root });
    await Deno.writeTextFile(join(root, "b/c/package-lock.json"), "changed\n");
    const after = await hashFiles(["**/package-lock.json"], { cwd: root });
    assert(before !== after, "digest must change");
    assertEquals(after, await expectedHash(await globFiles(["**/package-lock.json"], root)));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: no match warns and yields an empty string", async () => {
  const root = await tree(LOCKS);
  try {
    const { log, lines } = capture();
    assertEquals(await hashFiles(["**/Cargo.lock", "nothing/*"], { cwd: root, log }), "");
    const warn = lines.find((l) => l.includes("level=warn"));
    assert(warn, `expected a warning, got ${lines.join("\n")}`);
    assertStringIncludes(warn, "matched no file");
    assertStringIncludes(warn, "**/Cargo.lock nothing/*");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: a symlink loop does not make ** recurse forever; symlinked files count", async () => {
  const root = await tree({ "src/a.lock": "a\n" });
  try {
    await Deno.symlink(root, join(root, "src", "loop"));
    await Deno.symlink(join(root, "src", "a.lock"), join(root, "b.lock"));
    assertEquals(await globFiles(["**/*.lock"], root), [join(root, "b.lock"), join(root, "src/a.lock")]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hashFiles: a malformed pattern fails the template", async () => {
  const t = parseTemplate('{{ hashFiles "[abc" }}', { name: "cacheKey", funcs: keyFunctions({ cwd: "/" }) });
  const err = await assertRejects(() => t.execute(null));
  assertStringIncludes(err.message, "error calling hashFiles: bad pattern");
});

Deno.test("arch and os: Go's names", async () => {
  assertEquals(goArch("x86_64"), "amd64");
  assertEquals(goArch("aarch64"), "arm64");
  assertEquals(goOs("linux"), "linux");
  assertEquals(goOs("darwin"), "darwin");
  assertEquals(goOs("windows"), "windows");
  const uname = (await tool("uname", "-m")).trim();
  const t = parseTemplate("{{ arch }}/{{ os }}", { funcs: keyFunctions() });
  assertEquals(await t.execute(null), `${goArch(uname)}/linux`);
});

Deno.test("epoch: Unix seconds as a decimal string", async () => {
  assertEquals(epochSeconds(1_700_000_000_999), "1700000000");
  const before = Math.floor(Date.now() / 1000);
  const out = await parseTemplate("{{ epoch }}", { funcs: keyFunctions() }).execute(null);
  const after = Math.floor(Date.now() / 1000);
  assert(/^[0-9]+$/.test(out) && Number(out) >= before && Number(out) <= after, `epoch ${out}`);
  assertEquals(
    await parseTemplate('{{ printf "%T" epoch }}', { funcs: keyFunctions() }).execute(null),
    "string",
  );
});

Deno.test("string helpers (ci-cache additions) with pipes", async () => {
  const cases: [string, string][] = [
    ['{{ "feature/ABC-1" | lower | replace "/" "-" }}', "feature-abc-1"],
    ['{{ "abc" | upper }}', "ABC"],
    ['{{ "  padded \\t\\n" | trim }}', "padded"],
    ['{{ "refs/heads/main" | trimPrefix "refs/heads/" }}', "main"],
    ['{{ "app.tar.gz" | trimSuffix ".gz" }}|{{ "x" | trimSuffix "" }}', "app.tar|x"],
    ['{{ "0123456789abcdef" | trunc 7 }}|{{ trunc -3 "abcdef" }}', "0123456|def"],
  ];
  for (const [template, expected] of cases) {
    assertEquals(await parseTemplate(template, { funcs: keyFunctions() }).execute(null), expected, template);
  }
});
