/**
 * Every common tar reader reads our archives (issue 9 §3): tar, gzip and zstd
 * objects extract with GNU tar, bsdtar (libarchive), busybox tar and
 * Python's `tarfile.extractall` into trees identical to the source, without
 * an error. The readers are installed on first use by
 * scripts/install/tar-readers.sh. Our own reader accepts exactly one repeat
 * of the root entry after the trailer (what makes Python happy), still
 * restores old archives that end with the trailer, and refuses anything else
 * after it.
 */
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { CorruptArchiveError, unpackToMount } from "../lib/archive/unpack.ts";
import { decompressStream } from "../lib/archive/compression.ts";
import { END_OF_ARCHIVE } from "../lib/archive/tar.ts";
import { archive, buildTree, run, sh, snapshot, streamOf, tempDir } from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const root = new URL("..", import.meta.url).pathname;

let installed: Promise<void> | undefined;
function install(): Promise<void> {
  installed ??= (async () => {
    const r = await run("bash", [`${root}scripts/install/tar-readers.sh`]);
    if (r.code !== 0) throw new Error(`scripts/install/tar-readers.sh failed: ${r.stderr}`);
  })();
  return installed;
}

const DECOMPRESS = { tar: "cat", gzip: "gzip -dc", zstd: "zstd -q -dc" } as const;

/** Each reader's extraction of `archive` (compressed as `format`) into `out`. */
const READERS: Record<string, (format: keyof typeof DECOMPRESS) => string> = {
  "GNU tar": (f) => `${DECOMPRESS[f]} archive | tar -xf - -C out`,
  "bsdtar": (f) => `${DECOMPRESS[f]} archive | bsdtar -xpf - -C out`,
  "busybox tar": (f) => `${DECOMPRESS[f]} archive | busybox tar -xf - -C out`,
  "python3 tarfile": (f) =>
    `${DECOMPRESS[f]} archive > plain.tar && python3 -c 'import tarfile, sys
with tarfile.open("plain.tar") as t:
    kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    t.extractall("out", **kw)'`,
};

for (const format of ["tar", "gzip", "zstd"] as const) {
  for (const [reader, command] of Object.entries(READERS)) {
    Deno.test({
      ...opts,
      name: `readers: our ${format} archive extracts with ${reader} into an identical tree, without errors`,
      fn: async () => {
        await install();
        const { dir, cleanup } = await tempDir("readers");
        try {
          await buildTree(`${dir}/src/m`);
          // Relative names (a ./ mount): every reader extracts them under `out` as they are.
          await Deno.writeFile(`${dir}/archive`, await archive({ mount: "./m", cwd: `${dir}/src` }, format));
          await Deno.mkdir(`${dir}/out`);
          const r = await sh(command(format), dir);
          assertEquals(r.code, 0, `${reader}: ${r.stderr}`);
          assertEquals(r.stderr, "", `${reader} complained`);
          assertEquals(await snapshot(`${dir}/out/m`), await snapshot(`${dir}/src/m`));
        } finally {
          await cleanup();
        }
      },
    });
  }
}

for (const reader of ["GNU tar", "bsdtar", "busybox tar"]) {
  Deno.test({
    ...opts,
    name: `readers: an absolute-name archive (the Go plugin's layout) extracts with ${reader} under -C`,
    fn: async () => {
      await install();
      const { dir, cleanup } = await tempDir("readers");
      try {
        await buildTree(`${dir}/src/m`);
        await Deno.writeFile(`${dir}/archive`, await archive({ mount: "m", cwd: `${dir}/src` }, "tar"));
        await Deno.mkdir(`${dir}/out`);
        const r = await sh(READERS[reader]("tar"), dir);
        assertEquals(r.code, 0, r.stderr);
        for (const line of r.stderr.split("\n").filter(Boolean)) assert(/leading/i.test(line), line);
        const got = await snapshot(`${dir}/out${dir}/src/m`);
        const want = await snapshot(`${dir}/src/m`);
        if (reader === "busybox tar") {
          // busybox strips the leading "/" from member names but not from hard-link targets, so it links
          // `a/hard-link` to the absolute source path (outside -C), not to its extracted copy: same content,
          // other inode. Relative-name archives (above) keep the link.
          for (const tree of [got, want]) for (const n of Object.values(tree)) delete n.link;
        }
        assertEquals(got, want);
      } finally {
        await cleanup();
      }
    },
  });
}

function restore(data: Uint8Array, mount: string, cwd: string) {
  return unpackToMount(streamOf(data, 4096).pipeThrough(decompressStream().stream), { mount, cwd });
}

Deno.test({
  ...opts,
  name:
    "readers: old archives ending with the trailer still restore verified; extra entries after it are refused",
  fn: async () => {
    const { dir, cleanup } = await tempDir("readers");
    try {
      await buildTree(`${dir}/src/m`);
      const tar = await archive({ mount: "./m", cwd: `${dir}/src` });
      // Ours: trailer, the root entry again (one block: a short relative name), end of archive.
      const rootRepeat = tar.subarray(tar.length - 1536, tar.length - 1024);
      assertEquals(String.fromCharCode(rootRepeat[156]), "5");
      assertEquals(new TextDecoder().decode(rootRepeat.subarray(0, 2)), "m\0");
      const old = new Uint8Array(tar.length - 512);
      old.set(tar.subarray(0, tar.length - 1536));
      old.set(END_OF_ARCHIVE, tar.length - 1536);
      await Deno.mkdir(`${dir}/dst`);
      const r = await restore(old, "m", `${dir}/dst`);
      assertEquals(r.verified, true);
      assertEquals(await snapshot(`${dir}/dst/m`), await snapshot(`${dir}/src/m`));
      await Deno.remove(`${dir}/dst/m`, { recursive: true });

      // Two repeats, or a file after the trailer: refused, nothing left.
      const twice = new Uint8Array(tar.length + 512);
      twice.set(tar.subarray(0, tar.length - 1024));
      twice.set(rootRepeat, tar.length - 1024);
      twice.set(END_OF_ARCHIVE, tar.length - 512);
      const err = await assertRejects(() => restore(twice, "m", `${dir}/dst`), CorruptArchiveError);
      assert(/follows the integrity trailer/.test(err.message), err.message);
      assertEquals([...Deno.readDirSync(`${dir}/dst`)], []);
    } finally {
      await cleanup();
    }
  },
});
