import { assert, assertEquals, assertNotEquals, assertRejects } from "./assert.ts";
import { CorruptArchiveError, unpackToMount } from "../lib/archive/unpack.ts";
import { compressStream, decompressStream } from "../lib/archive/compression.ts";
import type { Logger } from "../lib/log.ts";
import {
  archive,
  buildTree,
  collect,
  exists,
  listDir,
  snapshot,
  streamOf,
  tempDir,
} from "./fixtures/archive/helpers.ts";

function restore(
  data: Uint8Array,
  mount: string,
  cwd: string,
  extra: { preserveMetadata?: boolean; log?: Logger } = {},
) {
  const { stream } = decompressStream();
  return unpackToMount(streamOf(data).pipeThrough(stream), { mount, cwd, ...extra });
}

for (const format of ["tar", "gzip", "zstd"] as const) {
  Deno.test({
    name: `unpack: ${format} round trip restores an identical tree (names, links, modes, setuid)`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const { dir, cleanup } = await tempDir("unpack");
      try {
        await buildTree(`${dir}/src/m`);
        const data = await archive({ mount: "m", cwd: `${dir}/src` }, format);
        const result = await restore(data, "m", `${dir}/dst`);
        assertEquals(result.verified, true);
        assertEquals(result.staged, true);
        assertEquals(result.target, `${dir}/dst/m`);
        assertEquals(result.hardlinks, 1);
        const [a, b] = [await snapshot(`${dir}/src/m`), await snapshot(`${dir}/dst/m`)];
        assertEquals(b, a);
        assertEquals(b["suid"].mode, 0o4755);
        assertEquals(b["secret"].mode, 0o600);
        assertEquals(b["empty"].mode, 0o750);
        const hl = await Deno.lstat(`${dir}/dst/m/a/hard-link`);
        assertEquals(
          hl.ino,
          (await Deno.lstat(`${dir}/dst/m/a/b/hello.txt`)).ino,
          "hard link restored as a link",
        );
        // nothing else beside the mount: the staging directory is gone
        assertEquals(await listDir(`${dir}/dst`), ["m"]);
      } finally {
        await cleanup();
      }
    },
  });
}

Deno.test("unpack: ./ mount restores under the restore-time cwd; absolute mount into a moved workspace", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await buildTree(`${dir}/ws1/node_modules`);
    const rel = await archive({ mount: "./node_modules", cwd: `${dir}/ws1` });
    const r1 = await restore(rel, "./node_modules", `${dir}/ws2`);
    assertEquals(r1.target, `${dir}/ws2/node_modules`);
    assertEquals(await snapshot(`${dir}/ws2/node_modules`), await snapshot(`${dir}/ws1/node_modules`));
    // absolute names (mount without ./), restored where the workspace is now
    const abs = await archive({ mount: `${dir}/ws1/node_modules`, cwd: "/" });
    const r2 = await restore(abs, "node_modules", `${dir}/moved/ws`);
    assertEquals(r2.target, `${dir}/moved/ws/node_modules`);
    assertEquals(await snapshot(`${dir}/moved/ws/node_modules`), await snapshot(`${dir}/ws1/node_modules`));
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: preserveMetadata restores file and directory mtimes", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await Deno.mkdir(`${dir}/src/m/d`, { recursive: true });
    await Deno.writeTextFile(`${dir}/src/m/d/f`, "f");
    await Deno.utime(`${dir}/src/m/d/f`, 1_500_000_000, 1_500_000_000.123);
    await Deno.utime(`${dir}/src/m/d`, 1_400_000_000, 1_400_000_000.5);
    const data = await archive({ mount: "m", cwd: `${dir}/src`, preserveMetadata: true });
    await restore(data, "m", `${dir}/dst`, { preserveMetadata: true });
    assertEquals((await Deno.lstat(`${dir}/dst/m/d/f`)).mtime?.getTime(), 1_500_000_000_123);
    assertEquals((await Deno.lstat(`${dir}/dst/m/d`)).mtime?.getTime(), 1_400_000_000_500);
    // without preserveMetadata the mtime is the extraction time
    await restore(data, "m", `${dir}/dst2`);
    assertNotEquals((await Deno.lstat(`${dir}/dst2/m/d/f`)).mtime?.getTime(), 1_500_000_000_123);
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: skipSymlinks archive restores without symlinks", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await buildTree(`${dir}/src/m`);
    const data = await archive({ mount: "m", cwd: `${dir}/src`, skipSymlinks: true });
    const r = await restore(data, "m", `${dir}/dst`);
    assertEquals(r.symlinks, 0);
    const snap = await snapshot(`${dir}/dst/m`);
    assertEquals(Object.values(snap).filter((n) => n.type === "symlink").length, 0);
    assertEquals(snap["a/b/hello.txt"].size, 6);
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: merging into a non-empty mount truncates longer files, replaces symlinks, keeps other files", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await Deno.mkdir(`${dir}/src/m`, { recursive: true });
    await Deno.writeTextFile(`${dir}/src/m/f.txt`, "short");
    await Deno.writeTextFile(`${dir}/src/m/was-link`, "now a file");
    const data = await archive({ mount: "m", cwd: `${dir}/src` });
    await Deno.mkdir(`${dir}/dst/m`, { recursive: true });
    await Deno.writeTextFile(`${dir}/dst/m/f.txt`, "a much longer existing content that must not survive");
    await Deno.writeTextFile(`${dir}/outside.txt`, "outside");
    await Deno.symlink(`${dir}/outside.txt`, `${dir}/dst/m/was-link`);
    await Deno.writeTextFile(`${dir}/dst/m/keep.txt`, "keep");
    const r = await restore(data, "m", `${dir}/dst`);
    assertEquals(r.staged, true, "extracted beside the mount and moved in after verification");
    assertEquals(await Deno.readTextFile(`${dir}/dst/m/f.txt`), "short");
    assertEquals(await Deno.readTextFile(`${dir}/dst/m/was-link`), "now a file");
    assert((await Deno.lstat(`${dir}/dst/m/was-link`)).isFile);
    assertEquals(
      await Deno.readTextFile(`${dir}/outside.txt`),
      "outside",
      "not written through the old symlink",
    );
    assertEquals(await Deno.readTextFile(`${dir}/dst/m/keep.txt`), "keep");
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: an empty mount directory is staged and replaced; a file mount round trips", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await buildTree(`${dir}/src/m`);
    const data = await archive({ mount: "m", cwd: `${dir}/src` });
    await Deno.mkdir(`${dir}/dst/m`, { recursive: true });
    const r = await restore(data, "m", `${dir}/dst`);
    assertEquals(r.staged, true);
    assertEquals(await snapshot(`${dir}/dst/m`), await snapshot(`${dir}/src/m`));

    await Deno.writeTextFile(`${dir}/src/cache.bin`, "single file");
    await Deno.chmod(`${dir}/src/cache.bin`, 0o640);
    const one = await archive({ mount: "cache.bin", cwd: `${dir}/src` });
    const r2 = await restore(one, "cache.bin", `${dir}/dst`);
    assertEquals(r2.files, 1);
    assertEquals(await Deno.readTextFile(`${dir}/dst/cache.bin`), "single file");
    assertEquals((await Deno.lstat(`${dir}/dst/cache.bin`)).mode! & 0o777, 0o640);
    // restoring over an existing (longer) file replaces it
    await Deno.writeTextFile(`${dir}/dst/cache.bin`, "an older, longer single file content");
    await restore(one, "cache.bin", `${dir}/dst`);
    assertEquals(await Deno.readTextFile(`${dir}/dst/cache.bin`), "single file");
    assertEquals((await listDir(`${dir}/dst`)).filter((n) => n.includes("cicache")), []);
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: a symlink mount round trips as a symlink", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await Deno.mkdir(`${dir}/src/real`, { recursive: true });
    await Deno.symlink("real", `${dir}/src/m`);
    const data = await archive({ mount: "m", cwd: `${dir}/src` });
    await restore(data, "m", `${dir}/dst`);
    assertEquals(await Deno.readLink(`${dir}/dst/m`), "real");
    assert(!(await exists(`${dir}/dst/real`)));
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: an archive with no entries under a missing mount leaves nothing", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await Deno.symlink("x", `${dir}/src-link`);
    const data = await archive({ mount: "src-link", cwd: dir, skipSymlinks: true });
    await Deno.mkdir(`${dir}/dst`);
    const r = await restore(data, "m", `${dir}/dst`);
    assertEquals(r.entries, 0);
    assertEquals(r.verified, true);
    assertEquals(await listDir(`${dir}/dst`), []);
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: staging directories left by a killed restore (over an hour old) are swept, fresh ones kept", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  try {
    await Deno.mkdir(`${dir}/src/m`, { recursive: true });
    await Deno.writeTextFile(`${dir}/src/m/f.txt`, "f");
    const data = await archive({ mount: "m", cwd: `${dir}/src` });
    await Deno.mkdir(`${dir}/dst/.m.cicache-deadbeef/x`, { recursive: true });
    await Deno.mkdir(`${dir}/dst/.m.cicache-0fresh00`);
    await Deno.mkdir(`${dir}/dst/.other.cicache-deadbeef`);
    const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await Deno.utime(`${dir}/dst/.m.cicache-deadbeef`, old, old);
    await Deno.utime(`${dir}/dst/.other.cicache-deadbeef`, old, old);
    await restore(data, "m", `${dir}/dst`);
    assertEquals(await listDir(`${dir}/dst`), [".m.cicache-0fresh00", ".other.cicache-deadbeef", "m"]);
  } finally {
    await cleanup();
  }
});

Deno.test("unpack: small files written in one call keep exact modes under any umask; a later entry of the same path wins, truncated", async () => {
  const { dir, cleanup } = await tempDir("unpack");
  const umask = Deno.umask();
  try {
    const src = `${dir}/src`;
    await Deno.mkdir(`${src}/m`, { recursive: true });
    await Deno.writeTextFile(`${src}/m/a`, "a long first version of a");
    const modes: Record<string, number> = { b: 0o751, c: 0o4755, d: 0o444, e: 0o640, f: 0o644, g: 0o600 };
    for (const [name, mode] of Object.entries(modes)) {
      await Deno.writeTextFile(`${src}/m/${name}`, name === "e" ? "" : `${name} `.repeat(300));
      await Deno.chmod(`${src}/m/${name}`, mode);
    }
    const tarFile = `${dir}/a.tar`;
    const create = await new Deno.Command("tar", { args: ["-cf", tarFile, "-C", src, "m"] }).output();
    assert(create.success);
    // GNU tar appends a second, shorter m/a with another mode: extraction must end with that one.
    await Deno.writeTextFile(`${src}/m/a`, "x");
    await Deno.chmod(`${src}/m/a`, 0o600);
    const append = await new Deno.Command("tar", { args: ["-rf", tarFile, "-C", src, "m/a"] }).output();
    assert(append.success);
    const data = await Deno.readFile(tarFile);
    for (const mask of [0o022, 0o077, 0o002]) {
      // Big chunks: every file's data is at hand (one call). 700-byte chunks: most files straddle two.
      for (const chunk of [1 << 20, 700]) {
        Deno.umask(mask);
        const out = `${dir}/out-${mask}-${chunk}`;
        await Deno.mkdir(out);
        const { stream } = decompressStream();
        const result = await unpackToMount(streamOf(data, chunk).pipeThrough(stream), {
          mount: "m",
          cwd: out,
        });
        assertEquals(result.files, 8);
        assertEquals(await Deno.readTextFile(`${out}/m/a`), "x");
        assertEquals((await Deno.lstat(`${out}/m/a`)).mode! & 0o7777, 0o600, `a, umask ${mask.toString(8)}`);
        for (const [name, mode] of Object.entries(modes)) {
          const info = await Deno.lstat(`${out}/m/${name}`);
          assertEquals(info.mode! & 0o7777, mode, `${name}, umask ${mask.toString(8)}, chunk ${chunk}`);
          assertEquals(
            await Deno.readFile(`${out}/m/${name}`),
            await Deno.readFile(`${src}/m/${name}`),
            name,
          );
        }
      }
    }
  } finally {
    Deno.umask(umask);
    await cleanup();
  }
});

/** The stream offset of our archive's trailer header: the last PAX global header block. */
function trailerOffset(tar: Uint8Array): number {
  for (let at = tar.length - 512; at >= 0; at -= 512) {
    if (
      tar[at + 156] === 0x67 &&
      new TextDecoder().decode(tar.subarray(at + 512, at + 1024)).includes("cicache.sha256")
    ) {
      return at;
    }
  }
  throw new Error("no trailer");
}

/**
 * Our archive of a mount holding one file of zeros, sized so that the trailer
 * header begins exactly at `target` (a multiple of 512): the zstd decoder
 * (on the calling thread up to 8 MiB of output, else its worker) hands its
 * output on in 1 MiB chunks, so targets around 2 MiB put the trailer at, just
 * before and just after one of its chunk boundaries.
 */
async function trailerAt(dir: string, target: number): Promise<{ tar: Uint8Array; file: number }> {
  const src = `${dir}/src-${target}`;
  await Deno.mkdir(`${src}/m`, { recursive: true });
  await Deno.writeFile(`${src}/m/z`, new Uint8Array(1 << 20));
  const first = await archive({ mount: "m", cwd: src });
  const size = (1 << 20) + target - trailerOffset(first);
  await Deno.writeFile(`${src}/m/z`, new Uint8Array(size));
  const tar = await archive({ mount: "m", cwd: src });
  assertEquals(trailerOffset(tar), target, "the trailer is where the test wants it");
  return { tar, file: size };
}

for (const format of ["zstd", "gzip", "tar"] as const) {
  Deno.test({
    name:
      `unpack: ${format}: trailer at, before and after a decoder chunk boundary verifies; a flipped byte just before it or early on is refused, the mount untouched`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const { dir, cleanup } = await tempDir("unpack");
      try {
        // 10 and 20 MiB: past the 8 MiB a small zstd input may decode to on the calling thread: the worker.
        for (
          const target of [(2 << 20) - 1024, (2 << 20) - 512, 2 << 20, (2 << 20) + 512, 10 << 20, 20 << 20]
        ) {
          const { tar, file } = await trailerAt(dir, target);
          const encode = (t: Uint8Array) =>
            format === "tar"
              ? Promise.resolve(t)
              : collect(streamOf(t).pipeThrough(compressStream(format, -1)));
          const out = `${dir}/out-${target}`;
          await Deno.mkdir(out);
          const ok = await restore(await encode(tar), "m", out);
          assertEquals(ok.verified, true, `trailer at ${target}`);
          assertEquals((await Deno.stat(`${out}/m/z`)).size, file);
          // The last byte before the trailer (in the decoder's latest chunk) and a byte hashed long before.
          for (const at of [target - 1, target - file + 1]) {
            const bad = tar.slice();
            bad[at] ^= 0x01;
            const data = await encode(bad);
            const missing = `${dir}/missing-${target}-${at}`;
            await Deno.mkdir(missing);
            const err = await assertRejects(() => restore(data, "m", missing), CorruptArchiveError);
            assert(
              /SHA-256/.test(err.message),
              `${format} trailer at ${target}, flip at ${at}: ${err.message}`,
            );
            assertEquals(await listDir(missing), [], "no mount, no staging left");
            // Into an existing mount: refused the same way, the mount byte for byte as it was.
            await restore(data, "m", out).then(() => assert(false, "restored"), (e) => {
              assert(e instanceof CorruptArchiveError, `${e}`);
            });
            assertEquals(await listDir(out), ["m"]);
            assertEquals(await listDir(`${out}/m`), ["z"]);
            assertEquals(await Deno.readFile(`${out}/m/z`), new Uint8Array(file));
          }
        }
      } finally {
        await cleanup();
      }
    },
  });
}
