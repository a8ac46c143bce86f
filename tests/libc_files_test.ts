import { assert, assertEquals } from "./assert.ts";
import { ERRNO, LibcFile, libcFiles } from "../lib/archive/libc_files.ts";
import { sh, tempDir } from "./fixtures/archive/helpers.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name:
    "libc_files: open + fstat describe a file as Deno.lstat does; reads end with null; closing twice is harmless",
  ignore: !linux,
  fn: async () => {
    const libc = libcFiles();
    assert(libc, "libc file calls are available on Linux with -A");
    const { dir, cleanup } = await tempDir("libc");
    try {
      await Deno.writeTextFile(`${dir}/plain`, "hello");
      await Deno.writeFile(`${dir}/empty`, new Uint8Array(0));
      await Deno.writeTextFile(`${dir}/suid`, "s");
      await Deno.chmod(`${dir}/suid`, 0o4750);
      await Deno.link(`${dir}/plain`, `${dir}/linked`);
      const touch = await sh(
        `touch -d @1500000000.123456789 ${dir}/plain && touch -d 1960-01-01T00:00:00.5Z ${dir}/empty`,
      );
      assertEquals(touch.code, 0, touch.stdout);
      for (const name of ["plain", "empty", "suid", "linked"]) {
        const file = libc.open(`${dir}/${name}`);
        assert(file instanceof LibcFile, `${name}: opened (errno ${file})`);
        const s = file.stat();
        const d = await Deno.lstat(`${dir}/${name}`);
        assertEquals(
          [s.isFile, s.mode, s.size, s.mtime.getTime(), s.uid, s.gid, s.nlink, s.ino, s.dev],
          [d.isFile, d.mode, d.size, d.mtime?.getTime(), d.uid, d.gid, d.nlink, d.ino, d.dev],
          name,
        );
        const buf = new Uint8Array(64);
        const n = file.readSync(buf);
        assertEquals(n ?? 0, d.size, `${name}: the whole file in one read`);
        assertEquals(file.readSync(buf), null, `${name}: then the end`);
        file.close();
        file.close();
      }
    } finally {
      await cleanup();
    }
  },
});

Deno.test({
  name:
    "libc_files: a symlink is refused (ELOOP), not followed; a FIFO opens without blocking; a socket and a missing path give their errno",
  ignore: !linux,
  sanitizeResources: false,
  fn: async () => {
    const libc = libcFiles()!;
    const { dir, cleanup } = await tempDir("libc");
    const listener = Deno.listen({ transport: "unix", path: `${dir}/sock` });
    try {
      await Deno.writeTextFile(`${dir}/target`, "t");
      await Deno.symlink(`${dir}/target`, `${dir}/link`);
      assertEquals((await sh(`mkfifo ${dir}/fifo`)).code, 0);
      assertEquals(libc.open(`${dir}/link`), ERRNO.ELOOP);
      assertEquals(libc.open(`${dir}/missing`), ERRNO.ENOENT);
      assertEquals(libc.open(`${dir}/sock`), ERRNO.ENXIO);
      const fifo = libc.open(`${dir}/fifo`); // no writer: a blocking open would wait forever
      assert(fifo instanceof LibcFile, `fifo: errno ${fifo}`);
      assertEquals(fifo.stat().isFile, false);
      fifo.close();
      const dirFile = libc.open(dir);
      assert(dirFile instanceof LibcFile);
      assertEquals(dirFile.stat().isFile, false);
      dirFile.close();
      assertEquals(libc.error(13).message, "Permission denied (os error 13)");
    } finally {
      listener.close();
      await cleanup();
    }
  },
});

Deno.test({
  name: "libc_files: without the FFI permission (--deny-ffi, or no -A) packing falls back to Deno's file API",
  ignore: !linux,
  fn: async () => {
    const { dir, cleanup } = await tempDir("libc");
    try {
      const module = new URL("../lib/archive/libc_files.ts", import.meta.url).href;
      await Deno.writeTextFile(
        `${dir}/probe.ts`,
        `import { libcFiles } from "${module}"; console.log(libcFiles() ? "libc" : "deno");`,
      );
      const run = async (...flags: string[]) => {
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["run", "--no-config", ...flags, `${dir}/probe.ts`],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert(out.success, new TextDecoder().decode(out.stderr));
        return new TextDecoder().decode(out.stdout).trim();
      };
      assertEquals(await run("-A", "--deny-ffi"), "deno");
      assertEquals(await run("--allow-read"), "deno");
      assertEquals(await run("-A"), "libc");
    } finally {
      await cleanup();
    }
  },
});

Deno.test({
  name:
    "libc_files: a directory whose listing spans several getdents64 calls lists every entry once, as readDirSync does",
  ignore: !linux,
  fn: async () => {
    const libc = libcFiles()!;
    const { dir, cleanup } = await tempDir("libc");
    try {
      // ≈3,000 entries of 20–60 bytes each: several 32 KiB batches.
      for (let i = 0; i < 3000; i++) {
        const name = `entry-${i}-${"x".repeat(i % 37)}`;
        if (i % 10 === 0) await Deno.mkdir(`${dir}/${name}`);
        else await Deno.writeFile(`${dir}/${name}`, new Uint8Array(0));
      }
      await Deno.symlink("entry-0-", `${dir}/a-link`); // to a directory: must not be opened through

      const fd = libc.openDir(dir);
      assert(fd >= 0, `openDir: errno ${-fd}`);
      const listing = libc.readDir(fd);
      libc.close(fd);
      const got = listing.names.map((n, i) => `${n} ${listing.isFile[i]}`).sort();
      const want = Array.from(Deno.readDirSync(dir)).map((e) => `${e.name} ${e.isFile}`).sort();
      assertEquals(got.length, 3001);
      assertEquals(got, want);
      const viaLink = libc.openDir(`${dir}/a-link`);
      assert(
        viaLink === -ERRNO.ELOOP || viaLink === -ERRNO.ENOTDIR,
        `a symlink opened as a directory: ${viaLink}`,
      );
      assertEquals(libc.openDir(`${dir}/entry-1-x`), -ERRNO.ENOTDIR);
    } finally {
      await cleanup();
    }
  },
});
