/**
 * Hostile and damaged archives: crafted with tar-stream (an independent tar
 * writer) or by cutting and flipping bytes of our own output. Each must fail
 * with the right error, write nothing outside the mount, and leave nothing
 * at all when the mount did not exist (staging removed).
 */
import tarStream from "../lib/deps/tar_stream.ts";
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { CorruptArchiveError, unpackToMount, UnsafeArchiveError } from "../lib/archive/unpack.ts";
import { compressStream, decompressStream } from "../lib/archive/compression.ts";
import {
  archive,
  buildTree,
  collect,
  exists,
  listDir,
  streamOf,
  tempDir,
} from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

interface Craft {
  name: string;
  type?: "file" | "directory" | "symlink" | "link";
  linkname?: string;
  body?: string;
}

/** Builds a tar with tar-stream. */
async function craft(entries: Craft[]): Promise<Uint8Array> {
  const p = tarStream.pack();
  const parts: Uint8Array[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on("data", (c) => parts.push(new Uint8Array(c as Uint8Array)));
    p.on("end", resolve);
    p.on("error", reject);
  });
  for (const e of entries) {
    const type = e.type ?? "file";
    await new Promise<void>((resolve, reject) =>
      p.entry(
        { name: e.name, type, linkname: e.linkname, mode: type === "directory" ? 0o755 : 0o644 },
        type === "file" ? (e.body ?? "payload") : "",
        (err?: Error | null) => (err ? reject(err) : resolve()),
      )
    );
  }
  p.finalize();
  await done;
  return await collect(streamOf(concat(parts)));
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function restore(data: Uint8Array, mount: string, cwd: string) {
  const { stream } = decompressStream();
  return unpackToMount(streamOf(data, 4096).pipeThrough(stream), { mount, cwd });
}

interface Attack {
  label: string;
  entries: (dir: string) => Craft[];
  /** Paths (relative to the temp dir) that must not exist afterwards. */
  untouched: string[];
}

const attacks: Attack[] = [
  {
    label: "../ escape",
    entries: () => [{ name: "m", type: "directory" }, { name: "m/../escaped.txt" }],
    untouched: ["escaped.txt", "dst/escaped.txt"],
  },
  {
    label: "deep ../ escape",
    entries: () => [{ name: "m", type: "directory" }, { name: "m/a/../../../escaped.txt" }],
    untouched: ["escaped.txt", "dst/escaped.txt"],
  },
  {
    label: "absolute path outside the root",
    entries: (dir) => [{ name: `${dir}/src/m`, type: "directory" }, { name: `${dir}/outside/abs.txt` }],
    untouched: ["outside/abs.txt"],
  },
  {
    label: "relative archive with an absolute entry",
    entries: (dir) => [{ name: "m", type: "directory" }, { name: `${dir}/outside/abs.txt` }],
    untouched: ["outside/abs.txt"],
  },
  {
    label: "symlink to an outside dir, then a file through it",
    entries: (dir) => [
      { name: "m", type: "directory" },
      { name: "m/evil", type: "symlink", linkname: `${dir}/outside` },
      { name: "m/evil/x" },
    ],
    untouched: ["outside/x"],
  },
  {
    label: "symlink to a parent, then a file under it",
    entries: () => [
      { name: "m", type: "directory" },
      { name: "m/up", type: "symlink", linkname: ".." },
      { name: "m/up/x" },
    ],
    untouched: ["dst/x", "x"],
  },
  {
    label: "directory replaced by a symlink, then a file under it",
    entries: (dir) => [
      { name: "m", type: "directory" },
      { name: "m/d", type: "directory" },
      { name: "m/d", type: "symlink", linkname: `${dir}/outside` },
      { name: "m/d/x" },
    ],
    untouched: ["outside/x"],
  },
  {
    label: "hard link to /etc/passwd",
    entries:
      () => [{ name: "m", type: "directory" }, { name: "m/pw", type: "link", linkname: "/etc/passwd" }],
    untouched: [],
  },
  {
    label: "hard link climbing out of the mount",
    entries: () => [
      { name: "m", type: "directory" },
      { name: "m/h", type: "link", linkname: "m/../outside/secret.txt" },
    ],
    untouched: [],
  },
];

for (const attack of attacks) {
  for (const mountState of ["missing", "existing"] as const) {
    Deno.test({
      ...opts,
      name: `safety: ${attack.label} (${mountState} mount) is refused with UnsafeArchiveError`,
      fn: async () => {
        const { dir, cleanup } = await tempDir("safety");
        try {
          await Deno.mkdir(`${dir}/outside`);
          await Deno.writeTextFile(`${dir}/outside/secret.txt`, "secret");
          await Deno.mkdir(`${dir}/dst`);
          if (mountState === "existing") {
            await Deno.mkdir(`${dir}/dst/m`);
            await Deno.writeTextFile(`${dir}/dst/m/existing.txt`, "existing");
          }
          const passwd = await Deno.lstat("/etc/passwd");
          const data = await craft(attack.entries(dir));
          await assertRejects(() => restore(data, "m", `${dir}/dst`), UnsafeArchiveError);
          for (const p of attack.untouched) assert(!(await exists(`${dir}/${p}`)), `${p} must not exist`);
          assertEquals(await listDir(`${dir}/outside`), ["secret.txt"]);
          assertEquals(await Deno.readTextFile(`${dir}/outside/secret.txt`), "secret");
          assertEquals((await Deno.lstat(`${dir}/outside/secret.txt`)).nlink, 1);
          assertEquals((await Deno.lstat("/etc/passwd")).nlink, passwd.nlink);
          if (mountState === "missing") assertEquals(await listDir(`${dir}/dst`), [], "nothing left at all");
          else assertEquals(await Deno.readTextFile(`${dir}/dst/m/existing.txt`), "existing");
        } finally {
          await cleanup();
        }
      },
    });
  }
}

Deno.test({
  ...opts,
  name: "safety: tar-stream archives with a symlink entry are created verbatim (targets not validated)",
  fn: async () => {
    const { dir, cleanup } = await tempDir("safety");
    try {
      const data = await craft([
        { name: "m", type: "directory" },
        { name: "m/abs", type: "symlink", linkname: "/etc/passwd" },
        { name: "m/up", type: "symlink", linkname: "../../x" },
        { name: "m/f", body: "hello" },
        { name: "m/h", type: "link", linkname: "m/f" },
      ]);
      const r = await restore(data, "m", `${dir}/dst`);
      assertEquals(r.verified, false);
      assertEquals(await Deno.readLink(`${dir}/dst/m/abs`), "/etc/passwd");
      assertEquals(await Deno.readLink(`${dir}/dst/m/up`), "../../x");
      assertEquals((await Deno.lstat(`${dir}/dst/m/h`)).nlink, 2);
    } finally {
      await cleanup();
    }
  },
});

/** Our archive of a small tree, and the offset of a file's data inside it. */
async function ourTar(dir: string): Promise<{ tar: Uint8Array; dataAt: number }> {
  await buildTree(`${dir}/src/m`);
  const tar = await archive({ mount: "m", cwd: `${dir}/src` });
  const needle = new TextEncoder().encode("hello\n");
  let at = -1;
  for (let i = 0; i < tar.length && at < 0; i += 512) {
    if (needle.every((b, j) => tar[i + j] === b)) at = i;
  }
  assert(at > 0, "found the file data");
  return { tar, dataAt: at };
}

Deno.test({
  ...opts,
  name: "safety: a flipped byte in file data fails the trailer check; nothing is left (missing mount)",
  fn: async () => {
    const { dir, cleanup } = await tempDir("safety");
    try {
      const { tar, dataAt } = await ourTar(dir);
      const bad = tar.slice();
      bad[dataAt + 1] ^= 0x01;
      await Deno.mkdir(`${dir}/dst`);
      const err = await assertRejects(() => restore(bad, "m", `${dir}/dst`), CorruptArchiveError);
      assert(/SHA-256/.test(err.message), err.message);
      assertEquals(await listDir(`${dir}/dst`), []);
      // the same archive into an existing mount: thrown as well
      await Deno.mkdir(`${dir}/dst/m`);
      await Deno.writeTextFile(`${dir}/dst/m/keep`, "k");
      await assertRejects(() => restore(bad, "m", `${dir}/dst`), CorruptArchiveError);
      // and the intact archive verifies
      await Deno.remove(`${dir}/dst/m`, { recursive: true });
      assertEquals((await restore(tar, "m", `${dir}/dst`)).verified, true);
    } finally {
      await cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "safety: a corrupted header checksum is a CorruptArchiveError",
  fn: async () => {
    const { dir, cleanup } = await tempDir("safety");
    try {
      const { tar, dataAt } = await ourTar(dir);
      const bad = tar.slice();
      bad[dataAt - 512 + 10] ^= 0x20; // inside the name of the header before the data
      await Deno.mkdir(`${dir}/dst`);
      await assertRejects(() => restore(bad, "m", `${dir}/dst`), CorruptArchiveError);
      assertEquals(await listDir(`${dir}/dst`), []);
    } finally {
      await cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "safety: a header checksum summed as signed bytes (old writers) is accepted; one off by one is refused",
  fn: async () => {
    const { dir, cleanup } = await tempDir("safety");
    try {
      const tar = await craft([{ name: "m", type: "directory" }, { name: "m/f", body: "signed" }]);
      // The file's header: put bytes above 127 in its owner name (ignored on restore), then store the
      // checksum as a signed-char sum, which differs from the unsigned one.
      const at = 512;
      const header = tar.subarray(at, at + 512);
      header.set([0xc3, 0xa9, 0xc3, 0xa9], 265);
      header.fill(0x20, 148, 156);
      let signed = 0;
      for (const b of header) signed += b > 127 ? b - 256 : b;
      const write = (sum: number) =>
        header.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
      write(signed);
      await Deno.mkdir(`${dir}/dst`);
      await restore(tar, "m", `${dir}/dst`);
      assertEquals(await Deno.readTextFile(`${dir}/dst/m/f`), "signed");
      await Deno.remove(`${dir}/dst/m`, { recursive: true });
      write(signed + 1);
      await assertRejects(() => restore(tar, "m", `${dir}/dst`), CorruptArchiveError);
      assertEquals(await listDir(`${dir}/dst`), []);
    } finally {
      await cleanup();
    }
  },
});

for (const format of ["tar", "gzip", "zstd"] as const) {
  Deno.test({
    ...opts,
    name: `safety: a truncated ${format} archive is a CorruptArchiveError at every cut; nothing is left`,
    fn: async () => {
      const { dir, cleanup } = await tempDir("safety");
      try {
        await buildTree(`${dir}/src/m`);
        const tar = await archive({ mount: "m", cwd: `${dir}/src` });
        const data = format === "tar"
          ? tar
          : await collect(streamOf(tar).pipeThrough(compressStream(format, -1)));
        const cuts = [1, 3, 100, 511, 512, 1000, Math.floor(data.length / 3), Math.floor(data.length / 2)];
        for (const back of [1, 2, 4, 8, 13, 512, 1024, 1100, 1536, 2048]) cuts.push(data.length - back);
        await Deno.mkdir(`${dir}/dst`);
        for (const cut of cuts) {
          const err = await assertRejects(() => restore(data.subarray(0, cut), "m", `${dir}/dst`));
          assert(
            err instanceof CorruptArchiveError,
            `cut at ${cut}/${data.length}: ${err.name}: ${err.message}`,
          );
          assertEquals(await listDir(`${dir}/dst`), [], `cut at ${cut}`);
        }
        assertEquals((await restore(data, "m", `${dir}/dst`)).verified, true);
      } finally {
        await cleanup();
      }
    },
  });
}

Deno.test({
  ...opts,
  name: "safety: a corrupted zstd frame or gzip member is a CorruptArchiveError; nothing is left",
  fn: async () => {
    const { dir, cleanup } = await tempDir("safety");
    try {
      await buildTree(`${dir}/src/m`);
      const tar = await archive({ mount: "m", cwd: `${dir}/src` });
      await Deno.mkdir(`${dir}/dst`);
      for (const format of ["zstd", "gzip"] as const) {
        const data = await collect(streamOf(tar).pipeThrough(compressStream(format, -1)));
        for (const at of [Math.floor(data.length / 2), data.length - 2, 20]) {
          const bad = data.slice();
          bad[at] ^= 0x5a;
          const err = await assertRejects(() => restore(bad, "m", `${dir}/dst`));
          assert(err instanceof CorruptArchiveError, `${format} flip at ${at}: ${err.name}: ${err.message}`);
          assertEquals(await listDir(`${dir}/dst`), []);
        }
      }
    } finally {
      await cleanup();
    }
  },
});
