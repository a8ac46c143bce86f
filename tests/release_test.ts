/**
 * scripts/release.ts: runs it as `deno task release` would, then checks the
 * layout (the bundle, one `plugin-<os>-<arch>.zst` per target or a reported
 * skip, nothing else), `SHA256SUMS` against the files, the commit embedded in
 * the bundle, and a save + restore through the bundled asset against Azurite.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./assert.ts";
import { assetName, TARGETS } from "../scripts/release.ts";
import { startAzurite } from "../scripts/servers/azurite.ts";

const root = new URL("../", import.meta.url).pathname;
const dec = new TextDecoder();

async function deno(args: string[], cwd: string, env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function sha256Hex(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const head = dec.decode(
  (await new Deno.Command("git", { args: ["rev-parse", "HEAD"], cwd: root, stdout: "piped" }).output())
    .stdout,
).trim();

Deno.test({
  name:
    "release: assets, SHA256SUMS and the bundle's embedded commit; the bundle saves and restores on Azurite",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "ci-cache-release-test-" });
    const out = `${tmp}/release`;
    let azurite: Awaited<ReturnType<typeof startAzurite>> | undefined;
    try {
      const r = await deno(["run", "-A", "scripts/release.ts", "--out", out], root);
      assertEquals(r.code, 0, r.stderr);

      // Layout: the bundle, and for every target its asset or a line saying why it was skipped.
      const files = new Set<string>();
      for await (const e of Deno.readDir(out)) files.add(e.name);
      const expected = new Set(["ci-cache.js", "SHA256SUMS"]);
      for (const t of TARGETS) {
        if (files.has(assetName(t))) {
          expected.add(assetName(t));
        } else {
          assertStringIncludes(r.stderr, `skipped ${assetName(t)}: deno compile --target ${t.triple} failed`);
        }
      }
      assertEquals(files, expected);

      // SHA256SUMS: `sha256sum -c` format, one line per asset, every hash right.
      const lines = (await Deno.readTextFile(`${out}/SHA256SUMS`)).trimEnd().split("\n");
      assertEquals(
        lines.map((l) => l.split("  ")[1]).sort(),
        [...expected].filter((f) => f !== "SHA256SUMS").sort(),
      );
      for (const line of lines) {
        assertMatch(line, /^[0-9a-f]{64} {2}\S+$/);
        const [hash, name] = line.split("  ");
        assertEquals(await sha256Hex(`${out}/${name}`), hash, name);
      }
      const check = await new Deno.Command("sha256sum", {
        args: ["-c", "SHA256SUMS"],
        cwd: out,
        stdout: "null",
      })
        .output();
      assert(check.success, "sha256sum -c SHA256SUMS");

      // A compiled asset, where one could be built, runs after zstd -d (only the host's own target can run).
      const host = TARGETS.find((t) => t.triple === Deno.build.target);
      if (host && files.has(assetName(host))) {
        const exe = `${tmp}/ci-cache`;
        const z = await new Deno.Command("zstd", {
          args: ["-d", "-q", "-o", exe, `${out}/${assetName(host)}`],
        })
          .output();
        assert(z.success, "zstd -d of the host asset");
        await Deno.chmod(exe, 0o755);
        const v = await new Deno.Command(exe, { args: ["--version"], stdout: "piped" }).output();
        assertStringIncludes(dec.decode(v.stdout), `commit ${head}`);
      }

      // The bundle, copied outside any git checkout, still names its commit: it was embedded.
      const ws = `${tmp}/ws`;
      await Deno.mkdir(`${ws}/data/deep`, { recursive: true });
      await Deno.copyFile(`${out}/ci-cache.js`, `${tmp}/ci-cache.js`);
      const v = await deno(["run", "-A", "--no-config", `${tmp}/ci-cache.js`, "--version"], ws);
      assertEquals(v.code, 0, v.stderr);
      assertMatch(
        v.stdout.trim(),
        new RegExp(`^ci-cache \\d+\\.\\d+\\.\\d+ \\(deno \\S+, commit ${head}\\)$`),
      );

      // The bundle is the whole program: save + restore against a real Azure emulator.
      azurite = await startAzurite();
      await Deno.writeTextFile(`${ws}/data/deep/f.txt`, "bundled");
      const save = await deno(
        [
          "run",
          "-A",
          "--no-config",
          `${tmp}/ci-cache.js`,
          "save",
          "--cache-key",
          "rel",
          "--archive-format",
          "zstd",
          "data",
        ],
        ws,
        azurite.env,
      );
      assertEquals(save.code, 0, save.stderr);
      await Deno.remove(`${ws}/data`, { recursive: true });
      const restore = await deno(
        [
          "run",
          "-A",
          "--no-config",
          `${tmp}/ci-cache.js`,
          "restore",
          "--cache-key",
          "rel",
          "--exit-code",
          "data",
        ],
        ws,
        azurite.env,
      );
      assertEquals(restore.code, 0, restore.stderr);
      assertEquals(await Deno.readTextFile(`${ws}/data/deep/f.txt`), "bundled");
    } finally {
      await azurite?.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
