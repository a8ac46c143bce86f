/**
 * Interop with GNU tar 1.34, gzip and zstd, both ways: our archives extract
 * with the standard tools into identical trees (the global headers are
 * ignored silently), and GNU tar archives (pax and gnu formats, absolute and
 * relative names, long names, symlinks, hard links) restore through ours.
 */
import { assert, assertEquals } from "./assert.ts";
import { unpackToMount } from "../lib/archive/unpack.ts";
import { decompressStream } from "../lib/archive/compression.ts";
import { Logger } from "../lib/log.ts";
import { archive, buildTree, sh, snapshot, streamOf, tempDir } from "./fixtures/archive/helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

const extractCmd = {
  tar: "tar -xf archive -C out",
  gzip: "gzip -dc archive | tar -xf - -C out",
  zstd: "zstd -q -dc archive | tar -xf - -C out",
} as const;

for (const format of ["tar", "gzip", "zstd"] as const) {
  Deno.test({
    ...opts,
    name: `interop: our ${format} archive extracts with GNU tar into an identical tree, without complaints`,
    fn: async () => {
      const { dir, cleanup } = await tempDir("interop");
      try {
        await buildTree(`${dir}/src/m`);
        // relative names (./ mount): GNU tar must print nothing at all
        await Deno.writeFile(`${dir}/archive`, await archive({ mount: "./m", cwd: `${dir}/src` }, format));
        await Deno.mkdir(`${dir}/out`);
        const r = await sh(extractCmd[format], dir);
        assertEquals(r.code, 0, r.stderr);
        assertEquals(r.stderr, "");
        assertEquals(await snapshot(`${dir}/out/m`), await snapshot(`${dir}/src/m`));
        // absolute names: only GNU tar's usual note about leading slashes
        await Deno.writeFile(`${dir}/archive`, await archive({ mount: "m", cwd: `${dir}/src` }, format));
        await Deno.remove(`${dir}/out`, { recursive: true });
        await Deno.mkdir(`${dir}/out`);
        const a = await sh(extractCmd[format], dir);
        assertEquals(a.code, 0, a.stderr);
        for (const line of a.stderr.split("\n").filter(Boolean)) assert(/Removing leading/.test(line), line);
        assertEquals(await snapshot(`${dir}/out${dir}/src/m`), await snapshot(`${dir}/src/m`));
        if (format !== "tar") {
          const t = await sh(`${format} -t archive`, dir);
          assertEquals(t.code, 0, t.stderr);
        }
      } finally {
        await cleanup();
      }
    },
  });
}

Deno.test({
  ...opts,
  name: "interop: our zstd output has content checksums (zstd -lv)",
  fn: async () => {
    const { dir, cleanup } = await tempDir("interop");
    try {
      await buildTree(`${dir}/m`);
      await Deno.writeFile(`${dir}/a.zst`, await archive({ mount: "m", cwd: dir }, "zstd", 3));
      const r = await sh("zstd -lv a.zst", dir);
      assertEquals(r.code, 0, r.stderr);
      assert(/Check: XXH64/.test(r.stdout), r.stdout);
    } finally {
      await cleanup();
    }
  },
});

const gnuCases = [
  { label: "pax format, relative names", create: "tar --format=pax -cf archive -C src m", mount: "m" },
  { label: "gnu format, relative names", create: "tar --format=gnu -cf archive -C src m", mount: "m" },
  {
    label: "pax format, absolute names (-P, as the Go plugin)",
    create: "tar --format=pax -cPf archive $PWD/src/m",
    mount: "m",
  },
  {
    label: "gnu format, absolute names (-P)",
    create: "tar --format=gnu -cPf archive $PWD/src/m",
    mount: "m",
  },
  {
    label: "gnu format, zstd-compressed",
    create: "tar --format=gnu -cf - -C src m | zstd -q -o archive",
    mount: "m",
  },
  {
    label: "pax format, gzip-compressed",
    create: "tar --format=pax -cf - -C src m | gzip > archive",
    mount: "m",
  },
];

for (const c of gnuCases) {
  Deno.test({
    ...opts,
    name: `interop: GNU tar archive (${c.label}) restores identically, unverified with a warning`,
    fn: async () => {
      const { dir, cleanup } = await tempDir("interop");
      try {
        await buildTree(`${dir}/src/m`);
        const made = await sh(c.create, dir);
        assertEquals(made.code, 0, made.stderr);
        const lines: string[] = [];
        const { stream } = decompressStream();
        const r = await unpackToMount(streamOf(await Deno.readFile(`${dir}/archive`)).pipeThrough(stream), {
          mount: c.mount,
          cwd: `${dir}/restored`,
          log: new Logger({ sink: (l) => lines.push(l) }),
        });
        assertEquals(r.verified, false);
        assert(lines.some((l) => l.includes("no integrity trailer")), lines.join("\n"));
        assertEquals(r.hardlinks, 1);
        assertEquals(await snapshot(`${dir}/restored/m`), await snapshot(`${dir}/src/m`));
      } finally {
        await cleanup();
      }
    },
  });
}
