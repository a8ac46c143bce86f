import { createHash } from "node:crypto";
import { assert, assertEquals, assertMatch, assertThrows } from "./assert.ts";
import { MountNotFoundError, pack } from "../lib/archive/pack.ts";
import { libcFiles } from "../lib/archive/libc_files.ts";
import { Logger } from "../lib/log.ts";
import { FilesystemBackend } from "../lib/storage/filesystem/backend.ts";
import { buildTree, bytes, collect, sh, tempDir } from "./fixtures/archive/helpers.ts";

const dec = new TextDecoder();

interface Raw {
  offset: number;
  name: string;
  type: string;
  size: number;
  linkname: string;
  pax: Record<string, string>;
  payload?: string;
}

function str(b: Uint8Array, off: number, len: number): string {
  let e = off;
  while (e < off + len && b[e] !== 0) e++;
  return dec.decode(b.subarray(off, e));
}

/** A deliberately naive, independent tar walker: raw headers (PAX x records merged, g payloads kept). */
function rawEntries(buf: Uint8Array): Raw[] {
  const out: Raw[] = [];
  let off = 0;
  let pax: Record<string, string> = {};
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    let name = str(h, 0, 100);
    if (h[345]) name = `${str(h, 345, 155)}/${name}`;
    const size = parseInt(str(h, 124, 12), 8) || 0;
    const type = String.fromCharCode(h[156]);
    const data = buf.subarray(off + 512, off + 512 + size);
    const start = off;
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === "x") {
      for (const line of dec.decode(data).split("\n").filter(Boolean)) {
        const rec = line.slice(line.indexOf(" ") + 1);
        pax[rec.slice(0, rec.indexOf("="))] = rec.slice(rec.indexOf("=") + 1);
      }
      continue;
    }
    const e: Raw = {
      offset: start,
      name: pax.path ?? name,
      type,
      size,
      linkname: pax.linkpath ?? str(h, 157, 100),
      pax,
    };
    if (type === "g") e.payload = dec.decode(data);
    out.push(e);
    pax = {};
    if (type === "g" || type === "2" || type === "5" || type === "1") continue;
  }
  return out;
}

Deno.test("pack: absolute entry names, root first, lexical order, dirs without trailing slash", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await Deno.mkdir(`${dir}/m/b`, { recursive: true });
    await Deno.mkdir(`${dir}/m/a`);
    await Deno.writeTextFile(`${dir}/m/a/z.txt`, "z");
    await Deno.writeTextFile(`${dir}/m/B.txt`, "B");
    await Deno.writeTextFile(`${dir}/m/b/1`, "1");
    const { stream, stats, root } = pack({ mount: "m", cwd: dir });
    assertEquals(root, `${dir}/m`);
    const entries = rawEntries(await collect(stream));
    assertEquals(entries.map((e) => `${e.type} ${e.name}`), [
      `g ${dir}/m/pax_global_header`,
      `5 ${dir}/m`,
      `0 ${dir}/m/B.txt`,
      `5 ${dir}/m/a`,
      `0 ${dir}/m/a/z.txt`,
      `5 ${dir}/m/b`,
      `0 ${dir}/m/b/1`,
      `g ${dir}/m/pax_global_header`,
      `5 ${dir}/m`, // the root repeated after the trailer, for Python's tarfile
    ]);
    assertStringHas(entries[0].payload!, `cicache.root=${dir}/m\n`);
    assertStringHas(entries[0].payload!, "cicache.version=1\n");
    assertEquals(await stats, { entries: 6, files: 3, dirs: 3, symlinks: 0, hardlinks: 0, bytes: 3 });
  } finally {
    await cleanup();
  }
});

function assertStringHas(text: string, part: string) {
  assert(text.includes(part), `expected ${JSON.stringify(text)} to contain ${JSON.stringify(part)}`);
}

Deno.test("pack: ./ mounts give relative names, also for both global headers", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await Deno.mkdir(`${dir}/node_modules/x`, { recursive: true });
    await Deno.writeTextFile(`${dir}/node_modules/x/y.js`, "y");
    const entries = rawEntries(await collect(pack({ mount: "./node_modules/", cwd: dir }).stream));
    assertEquals(entries.map((e) => `${e.type} ${e.name}`), [
      "g node_modules/pax_global_header",
      "5 node_modules",
      "5 node_modules/x",
      "0 node_modules/x/y.js",
      "g node_modules/pax_global_header",
      "5 node_modules",
    ]);
    assertStringHas(entries[0].payload!, `cicache.root=${dir}/node_modules\n`);
    assertStringHas(entries[0].payload!, `cicache.name=node_modules\n`);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: trailer carries the SHA-256 of all bytes before it and the entry count", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await buildTree(`${dir}/m`);
    const { stream, stats } = pack({ mount: "m", cwd: dir });
    const tar = await collect(stream);
    const entries = rawEntries(tar);
    const trailer = entries[entries.length - 2];
    assertEquals(trailer.type, "g");
    assertEquals(entries[entries.length - 1].name, entries[1].name, "the root entry follows the trailer");
    assertEquals(entries[entries.length - 1].type, "5");
    const digest = createHash("sha256").update(tar.subarray(0, trailer.offset)).digest("hex");
    assertStringHas(trailer.payload!, `cicache.sha256=${digest}\n`);
    assertStringHas(trailer.payload!, `cicache.entries=${(await stats).entries}\n`);
    // end of archive: two zero blocks right after the trailer
    const tail = tar.subarray(tar.length - 1024);
    assert(tail.every((b) => b === 0));
    assertEquals(tar.length % 512, 0);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: long, unicode names via PAX; hard links stored once; symlinks verbatim; modes kept", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await buildTree(`${dir}/m`);
    const { stream, stats } = pack({ mount: "m", cwd: dir });
    const entries = rawEntries(await collect(stream));
    const by = (suffix: string) => entries.find((e) => e.name === `${dir}/m/${suffix}`)!;
    assertEquals(by("n".repeat(110)).type, "0");
    const deep = entries.find((e) => e.name.endsWith(`file-${"y".repeat(60)}.txt`))!;
    assert(deep.name.length > 255, "a name over 255 bytes");
    assertEquals(deep.pax.path, deep.name);
    assertEquals(by("ünïcødé-日本語-🎉.txt").pax.path, `${dir}/m/ünïcødé-日本語-🎉.txt`);
    const links = entries.filter((e) => e.type === "1");
    assertEquals(links.length, 1, "one hard-link entry");
    const [first, second] = [`${dir}/m/a/b/hello.txt`, `${dir}/m/a/hard-link`].sort();
    assertEquals(links[0].name, second);
    assertEquals(links[0].linkname, first);
    assertEquals(by("a/abs-link").linkname, "/etc/hostname");
    assertEquals(by("a/up-link").linkname, "../../outside-target");
    assertEquals(by("a/dangling").type, "2");
    assertEquals((await stats).hardlinks, 1);
    assertEquals((await stats).symlinks, 4);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: skipSymlinks leaves symlinks out; a symlink mount is one symlink entry", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await buildTree(`${dir}/m`);
    const { stream, stats } = pack({ mount: "m", cwd: dir, skipSymlinks: true });
    const entries = rawEntries(await collect(stream));
    assertEquals(entries.filter((e) => e.type === "2").length, 0);
    assertEquals((await stats).symlinks, 0);
    await Deno.symlink("m", `${dir}/link-mount`);
    const one = rawEntries(await collect(pack({ mount: "link-mount", cwd: dir }).stream));
    assertEquals(one.map((e) => `${e.type} ${e.name} ${e.linkname}`), [
      `g ${dir}/link-mount/pax_global_header `,
      `2 ${dir}/link-mount m`,
      `g ${dir}/link-mount/pax_global_header `,
    ]);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: a missing mount throws MountNotFoundError naming it", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    const err = assertThrows(() => pack({ mount: "nope", cwd: dir }), MountNotFoundError);
    assertMatch(err.message, /nope/);
  } finally {
    await cleanup();
  }
});

Deno.test({
  name: "pack: sockets are skipped with a warning",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { dir, cleanup } = await tempDir("pack");
    const listener = Deno.listen({ transport: "unix", path: `${dir}/m.sock` });
    try {
      await Deno.mkdir(`${dir}/m`);
      await Deno.rename(`${dir}/m.sock`, `${dir}/m/app.sock`);
      await Deno.writeTextFile(`${dir}/m/f`, "f");
      const lines: string[] = [];
      const { stream, stats } = pack({
        mount: "m",
        cwd: dir,
        log: new Logger({ sink: (l) => lines.push(l) }),
      });
      const entries = rawEntries(await collect(stream));
      assertEquals(entries.filter((e) => e.name.endsWith("app.sock")).length, 0);
      assertEquals((await stats).files, 1);
      assert(lines.some((l) => l.includes("socket") && l.includes("app.sock")), lines.join("\n"));
    } finally {
      listener.close();
      await cleanup();
    }
  },
});

Deno.test("pack: preserveMetadata writes sub-second mtimes and ownership; without it only whole seconds", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await Deno.mkdir(`${dir}/m`);
    await Deno.writeTextFile(`${dir}/m/f`, "f");
    await Deno.utime(`${dir}/m/f`, 1_600_000_000.25, 1_600_000_000.5);
    const with_ = rawEntries(await collect(pack({ mount: "m", cwd: dir, preserveMetadata: true }).stream));
    const f = with_.find((e) => e.name.endsWith("/m/f"))!;
    assertEquals(f.pax.mtime, "1600000000.5");
    const without = rawEntries(await collect(pack({ mount: "m", cwd: dir }).stream));
    assertEquals(without.find((e) => e.name.endsWith("/m/f"))!.pax.mtime, undefined);
  } finally {
    await cleanup();
  }
});

/** A tree with odd-sized small files (padding after every one) and files spanning several 1 MiB chunks. */
async function chunkyTree(dir: string): Promise<void> {
  await buildTree(dir);
  await Deno.mkdir(`${dir}/many`);
  for (let i = 0; i < 300; i++) await Deno.writeFile(`${dir}/many/f${i}`, bytes(1 + i * 97, i + 1));
  await Deno.writeFile(`${dir}/big`, bytes((5 << 20) + 123, 7));
  await Deno.writeFile(`${dir}/exact`, bytes(1 << 20, 8));
}

Deno.test("pack: released chunks are reused; the archive is unchanged and a big file streams through a few buffers", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await chunkyTree(`${dir}/m`);
    const reference = await collect(pack({ mount: "m", cwd: dir }).stream);
    const { stream, stats, release } = pack({ mount: "m", cwd: dir });
    const copies: Uint8Array[] = [];
    const buffers = new Set<ArrayBufferLike>();
    for await (const chunk of stream) {
      copies.push(chunk.slice());
      buffers.add(chunk.buffer);
      release(chunk);
      release(chunk); // a second release of the same chunk is ignored
    }
    assert(copies.length >= 8, `only ${copies.length} chunks`);
    assert(buffers.size <= 3, `${buffers.size} buffers for ${copies.length} chunks`);
    assertEquals(await collect(ReadableStream.from(copies)), reference);
    assertEquals((await stats).files, rawEntries(reference).filter((e) => e.type === "0").length);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: the filesystem backend hands written chunks back; the stored archive is intact", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await chunkyTree(`${dir}/m`);
    await Deno.mkdir(`${dir}/store`);
    const reference = await collect(pack({ mount: "m", cwd: dir }).stream);
    const archive = pack({ mount: "m", cwd: dir });
    let released = 0;
    const backend = new FilesystemBackend(`${dir}/store`);
    await backend.put("k/m", archive.stream, {}, {
      release: (c) => {
        released++;
        archive.release(c);
      },
    });
    assert(released >= 8, `${released} chunks released`);
    assertEquals(await Deno.readFile(`${dir}/store/k/m`), reference);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: a file replaced by a directory or removed during the walk is archived as found", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await Deno.mkdir(`${dir}/m`);
    await Deno.writeFile(`${dir}/m/a`, bytes(6 << 20, 3)); // spans several chunks: b and c are visited later
    await Deno.writeTextFile(`${dir}/m/b`, "b");
    await Deno.writeTextFile(`${dir}/m/c`, "c");
    const { stream, stats } = pack({ mount: "m", cwd: dir });
    const reader = stream.getReader();
    const parts: Uint8Array[] = [];
    const first = await reader.read();
    parts.push(first.value!);
    // The listing said b and c are files; now b is a directory and c is gone.
    await Deno.remove(`${dir}/m/b`);
    await Deno.mkdir(`${dir}/m/b`);
    await Deno.writeTextFile(`${dir}/m/b/inner`, "inner");
    await Deno.remove(`${dir}/m/c`);
    for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value);
    const entries = rawEntries(await collect(ReadableStream.from(parts)));
    const names = entries.filter((e) => e.type !== "g").map((e) => `${e.type} ${e.name.slice(dir.length)}`);
    assertEquals(names, ["5 /m", "0 /m/a", "5 /m/b", "0 /m/b/inner", "5 /m"]);
    assertEquals((await stats).files, 2);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: the exclude predicate leaves paths out with everything below them, never asked about the mount", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    await Deno.mkdir(`${dir}/m/.cache/deep`, { recursive: true });
    await Deno.mkdir(`${dir}/m/keep`);
    await Deno.writeTextFile(`${dir}/m/.cache/deep/x`, "x");
    await Deno.writeTextFile(`${dir}/m/keep/a.txt`, "a");
    await Deno.writeTextFile(`${dir}/m/keep/b.log`, "b");
    const asked: string[] = [];
    const exclude = (p: string) => {
      asked.push(p);
      return p.endsWith("/.cache") || p.endsWith(".log");
    };
    const { stream, stats } = pack({ mount: "m", cwd: dir, exclude });
    const entries = rawEntries(await collect(stream)).filter((e) => e.type !== "g");
    assertEquals(entries.map((e) => `${e.type} ${e.name}`), [
      `5 ${dir}/m`,
      `5 ${dir}/m/keep`,
      `0 ${dir}/m/keep/a.txt`,
      `5 ${dir}/m`, // the root's entry repeated after the trailer, for Python's tarfile
    ]);
    assertEquals((await stats).files, 1);
    assert(!asked.includes(`${dir}/m`), "the mount itself is never excluded");
    assert(!asked.some((p) => p.includes("/.cache/")), "an excluded directory is not walked");
  } finally {
    await cleanup();
  }
});

Deno.test("pack: files on both sides of the read-whole (4 KiB) and growth-check (64 KiB) limits and their hard links extract byte for byte with GNU tar", async () => {
  const { dir, cleanup } = await tempDir("pack");
  try {
    const sizes = [0, 1, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537, 300_000];
    await Deno.mkdir(`${dir}/m/d`, { recursive: true });
    for (const [i, n] of sizes.entries()) await Deno.writeFile(`${dir}/m/d/f-${n}`, bytes(n, i + 1));
    await Deno.link(`${dir}/m/d/f-512`, `${dir}/m/d/link-small`);
    await Deno.link(`${dir}/m/d/f-300000`, `${dir}/m/d/link-large`);
    const { stream, stats } = pack({ mount: "m", cwd: dir });
    const archive = await collect(stream);
    const entries = rawEntries(archive);
    const links = entries.filter((e) => e.type === "1").map((e) => [e.name, e.linkname]);
    assertEquals(links.sort(), [
      [`${dir}/m/d/link-large`, `${dir}/m/d/f-300000`],
      [`${dir}/m/d/link-small`, `${dir}/m/d/f-512`],
    ]);
    for (const n of sizes) assertEquals(entries.find((e) => e.name === `${dir}/m/d/f-${n}`)?.size, n);
    assertEquals((await stats).files, sizes.length);
    assertEquals((await stats).bytes, sizes.reduce((a, b) => a + b, 0));
    // GNU tar checks every header checksum; the extracted files must equal the originals.
    await Deno.writeFile(`${dir}/a.tar`, archive);
    await Deno.mkdir(`${dir}/x`);
    const res = await sh(`tar -xf ${dir}/a.tar -C ${dir}/x 2>&1`);
    assertEquals(res.code, 0, res.stdout);
    const out = `${dir}/x${dir}/m/d`;
    for (const [i, n] of sizes.entries()) assertEquals(await Deno.readFile(`${out}/f-${n}`), bytes(n, i + 1));
    assertEquals((await Deno.stat(`${out}/link-small`)).ino, (await Deno.stat(`${out}/f-512`)).ino);
    assertEquals((await Deno.stat(`${out}/link-large`)).ino, (await Deno.stat(`${out}/f-300000`)).ino);
  } finally {
    await cleanup();
  }
});

Deno.test("pack: reading through libc and through Deno's file API give the same archive, byte for byte", async () => {
  // On this Linux machine the libc path must be the one in use: a silent fallback would make this test moot.
  if (Deno.build.os === "linux") assert(libcFiles() !== undefined, "libc file calls are available on Linux");
  const { dir, cleanup } = await tempDir("pack");
  try {
    await chunkyTree(`${dir}/m`);
    await Deno.mkdir(`${dir}/m/modes`);
    for (const mode of [0o400, 0o640, 0o755, 0o4755, 0o2750, 0o1777]) {
      await Deno.writeTextFile(`${dir}/m/modes/f-${mode.toString(8)}`, "m");
      await Deno.chmod(`${dir}/m/modes/f-${mode.toString(8)}`, mode);
    }
    await Deno.writeTextFile(`${dir}/m/modes/old`, "before 1970");
    await Deno.utime(`${dir}/m/modes/old`, -315619199.5, -315619199.5);
    await Deno.writeTextFile(`${dir}/m/modes/subsecond`, "s");
    const touch = await sh(`touch -d @1700000000.987654321 ${dir}/m/modes/subsecond`); // nanoseconds
    assertEquals(touch.code, 0, touch.stdout);
    await Deno.link(`${dir}/m/many/f7`, `${dir}/m/modes/hard-small`);
    await Deno.link(`${dir}/m/big`, `${dir}/m/modes/hard-big`);
    const fifo = await sh(`mkfifo ${dir}/m/modes/pipe`);
    assertEquals(fifo.code, 0, fifo.stdout);
    for (const preserveMetadata of [false, true]) {
      const viaDeno = await collect(pack({ mount: "m", cwd: dir, preserveMetadata, libc: false }).stream);
      const viaLibc = await collect(pack({ mount: "m", cwd: dir, preserveMetadata }).stream);
      assertEquals(viaLibc.length, viaDeno.length, `preserveMetadata ${preserveMetadata}: archive length`);
      const digest = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
      assertEquals(digest(viaLibc), digest(viaDeno), `preserveMetadata ${preserveMetadata}: archives differ`);
      const entries = rawEntries(viaLibc);
      assertEquals(
        entries.filter((e) => e.type === "1").length,
        3,
        "the hard links stored as links (one from buildTree)",
      );
      assert(!entries.some((e) => e.name.endsWith("/pipe")), "the FIFO is left out");
    }
  } finally {
    await cleanup();
  }
});

for (const libc of [true, false]) {
  Deno.test(`pack (${libc ? "libc" : "Deno's file API"}): a file swapped for a symlink or a FIFO after the listing is never followed and never blocks`, async () => {
    const { dir, cleanup } = await tempDir("pack");
    try {
      await Deno.mkdir(`${dir}/m`);
      await Deno.writeFile(`${dir}/m/a`, bytes(6 << 20, 3)); // spans several chunks: b and c are opened later
      await Deno.writeTextFile(`${dir}/m/b`, "b");
      await Deno.writeTextFile(`${dir}/m/c`, "c");
      await Deno.writeTextFile(`${dir}/secret`, "outside the mount");
      const lines: string[] = [];
      const log = new Logger({ sink: (l) => lines.push(l) });
      const { stream, stats } = pack({ mount: "m", cwd: dir, log, libc });
      const reader = stream.getReader();
      const parts: Uint8Array[] = [(await reader.read()).value!];
      // The listing said b and c are regular files; now b points outside the mount and c is a FIFO
      // (opening it for reading, blocking, would wait for a writer forever).
      await Deno.remove(`${dir}/m/b`);
      await Deno.symlink(`${dir}/secret`, `${dir}/m/b`);
      await Deno.remove(`${dir}/m/c`);
      const fifo = await sh(`mkfifo ${dir}/m/c`);
      assertEquals(fifo.code, 0, fifo.stdout);
      for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value);
      const archive = await collect(ReadableStream.from(parts));
      const entries = rawEntries(archive).filter((e) => e.type !== "g");
      assertEquals(entries.map((e) => `${e.type} ${e.name.slice(dir.length)} ${e.linkname}`), [
        "5 /m ",
        "0 /m/a ",
        `2 /m/b ${dir}/secret`,
        "5 /m ",
      ]);
      assert(!dec.decode(archive).includes("outside the mount"), "the symlink's target was read");
      assertEquals((await stats).files, 1);
      assert(lines.some((l) => l.includes("FIFO") && l.includes("/m/c")), lines.join("\n"));
    } finally {
      await cleanup();
    }
  });
}

for (const libc of [true, false]) {
  Deno.test(`pack (${libc ? "libc" : "Deno's file API"}): a name that is not valid UTF-8 is left out with a warning; the rest is archived`, async () => {
    const { dir, cleanup } = await tempDir("pack");
    try {
      await Deno.mkdir(`${dir}/m/d`, { recursive: true });
      await Deno.writeTextFile(`${dir}/m/d/ok`, "ok");
      const made = await sh(
        `printf x > "${dir}/m/d/$(printf 'bad\\377name')" && mkdir "${dir}/m/$(printf 'dir\\376')"`,
      );
      assertEquals(made.code, 0, made.stdout);
      const lines: string[] = [];
      const log = new Logger({ sink: (l) => lines.push(l) });
      const entries = rawEntries(await collect(pack({ mount: "m", cwd: dir, log, libc }).stream));
      assertEquals(
        entries.filter((e) => e.type !== "g").map((e) => `${e.type} ${e.name.slice(dir.length)}`),
        [
          "5 /m",
          "5 /m/d",
          "0 /m/d/ok",
          "5 /m",
        ],
      );
      const warned = lines.filter((l) => l.includes("not valid UTF-8"));
      assertEquals(warned.length, 2, lines.join("\n"));
    } finally {
      await cleanup();
    }
  });
}

/** The process's open file descriptors (Linux). */
function openFds(): number {
  return Array.from(Deno.readDirSync("/proc/self/fd")).length;
}

Deno.test({
  name: "pack: no descriptor stays open after a complete pack, a cancelled one, or one that fails midway",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const { dir, cleanup } = await tempDir("pack");
    try {
      let path = `${dir}/m`;
      for (let depth = 0; depth < 12; depth++) {
        path += `/level-${depth}`;
        await Deno.mkdir(path, { recursive: true });
        await Deno.writeFile(`${path}/big`, bytes(3 << 20, depth + 1)); // several chunks per level
        await Deno.writeTextFile(`${path}/small`, "s");
      }
      const before = openFds();
      await collect(pack({ mount: "m", cwd: dir }).stream);
      assertEquals(openFds(), before, "after a complete pack");

      const reader = pack({ mount: "m", cwd: dir }).stream.getReader();
      for (let i = 0; i < 20; i++) await reader.read(); // deep in the tree: directories open on the stack
      assert(openFds() > before, "the walk holds its directories open");
      await reader.cancel();
      assertEquals(openFds(), before, "after a cancel");

      // An error deep in the walk (here from the exclude predicate) ends the stream with that error.
      const exclude = (p: string) => {
        if (p.endsWith("/level-6/small")) throw new Error("predicate failed");
        return false;
      };
      const err = await collect(pack({ mount: "m", cwd: dir, exclude }).stream).then(
        () => undefined,
        (e) => e,
      );
      assertMatch(String(err), /predicate failed/);
      assertEquals(openFds(), before, "after a failed pack");
    } finally {
      await cleanup();
    }
  },
});

for (const libc of [true, false]) {
  Deno.test({
    name: `pack (${
      libc ? "libc" : "Deno's file API"
    }): a parent directory swapped for a symlink mid-walk cannot redirect its files outside the mount`,
    ignore: libc && libcFiles() === undefined,
    fn: async () => {
      const { dir, cleanup } = await tempDir("pack");
      try {
        await Deno.mkdir(`${dir}/m/d`, { recursive: true });
        await Deno.writeFile(`${dir}/m/d/a`, bytes(6 << 20, 3)); // spans several chunks: f is opened later
        await Deno.writeTextFile(`${dir}/m/d/f`, "the file as listed");
        await Deno.mkdir(`${dir}/m/e`);
        await Deno.writeTextFile(`${dir}/m/e/g`, "a directory listed later");
        await Deno.mkdir(`${dir}/outside`);
        await Deno.writeTextFile(`${dir}/outside/f`, "outside the mount");
        await Deno.writeTextFile(`${dir}/outside/g`, "outside the mount, listed");
        const lines: string[] = [];
        const log = new Logger({ sink: (l) => lines.push(l) });
        const { stream } = pack({ mount: "m", cwd: dir, libc, log });
        const reader = stream.getReader();
        const parts: Uint8Array[] = [(await reader.read()).value!];
        // d was listed and is being walked; now its path leads outside the mount. e, not listed yet, too.
        await Deno.rename(`${dir}/m/d`, `${dir}/m/d-moved`);
        await Deno.symlink(`${dir}/outside`, `${dir}/m/d`);
        await Deno.rename(`${dir}/m/e`, `${dir}/m/e-moved`);
        await Deno.symlink(`${dir}/outside`, `${dir}/m/e`);
        for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value);
        const text = dec.decode(await collect(ReadableStream.from(parts)));
        assert(!text.includes("outside the mount"), "a file was read through a swapped-in symlink");
        if (libc) {
          assert(
            text.includes("the file as listed"),
            "the listed file is archived from the directory walked",
          );
        } else {
          // Deno's file API cannot open relative to the directory walked: the file is left out, with a warning.
          assert(!text.includes("the file as listed"), "read through the swapped path");
          assert(lines.some((l) => l.includes("changed type") && l.includes("/m/d/f")), lines.join("\n"));
        }
      } finally {
        await cleanup();
      }
    },
  });
}
