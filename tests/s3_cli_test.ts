/**
 * End to end through the CLI (`run` of main.ts) against a real OpenStack
 * Swift with s3api on 127.0.0.1: save a mount with zstd, delete it, restore
 * it, check the files came back; then flush removes the object. And a
 * save interrupted by SIGINT aborts its multipart upload and exits 130.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { seededBytes } from "./backend_conformance.ts";
import { run } from "../main.ts";
import { startSwift } from "../scripts/servers/swift.ts";
import { interrupt, writeRandomTree } from "./child.ts";
import { HeadObjectCommand, ListMultipartUploadsCommand, S3Client } from "../lib/deps/aws_client_s3.ts";

const MiB = 1024 * 1024;

Deno.test({
  name: "s3 cli: save then restore through run() with zstd against Swift",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const swift = await startSwift();
    const dir = await Deno.makeTempDir();
    try {
      const mount = `${dir}/cache`;
      await Deno.mkdir(`${mount}/sub`, { recursive: true });
      const big = seededBytes(13 * MiB, 3); // several 5 MiB parts: a multipart upload and ranged reads
      await Deno.writeFile(`${mount}/sub/big.bin`, big);
      await Deno.writeTextFile(`${mount}/a.txt`, "hello s3");
      const lines: string[] = [];
      const sink = (l: string) => lines.push(l);
      const env = {
        ...swift.env,
        PLUGIN_MOUNT: mount,
        PLUGIN_CACHE_KEY: "k",
        PLUGIN_ARCHIVE_FORMAT: "zstd",
        PLUGIN_PART_SIZE_MB: "5",
      };
      assertEquals(await run([], { ...env, PLUGIN_REBUILD: "true" }, { sink }), 0, lines.join("\n"));
      await Deno.remove(mount, { recursive: true });
      assertEquals(await run([], { ...env, PLUGIN_RESTORE: "true" }, { sink }), 0, lines.join("\n"));
      assertEquals(await Deno.readTextFile(`${mount}/a.txt`), "hello s3");
      const back = await Deno.readFile(`${mount}/sub/big.bin`);
      assertEquals(back.length, big.length);
      assert(back.every((b, i) => b === big[i]), "restored bytes differ");
      assert(!lines.join("\n").includes(swift.secretKey), "the secret key was logged");
      // Rejected credentials are not a cache outage: they fail the step (exit 1), on save and on restore.
      const wrong = { ...env, PLUGIN_SECRET_KEY: "wrong-secret-for-this-test" };
      for (const mode of ["PLUGIN_REBUILD", "PLUGIN_RESTORE"]) {
        lines.length = 0;
        assertEquals(
          await run([], { ...wrong, [mode]: "true" }, { sink }),
          1,
          `${mode}: ${lines.join("\n")}`,
        );
        assert(lines.some((l) => l.includes("kind=AuthFailed")), lines.join("\n"));
        assert(!lines.some((l) => l.includes("[IMPORTANT]")), "not reported as a cache failure");
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
      await swift.stop();
    }
  },
});

Deno.test({
  name: "s3 cli: SIGINT during a save aborts the multipart upload (no parts, no object) and exits 130",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const swift = await startSwift();
    const dir = await Deno.makeTempDir();
    const client = new S3Client({
      region: swift.region,
      endpoint: swift.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: swift.accessKey, secretAccessKey: swift.secretKey },
    });
    try {
      await writeRandomTree(`${dir}/work/big`, 10, 16 * MiB);
      const uploads = async () =>
        (await client.send(new ListMultipartUploadsCommand({ Bucket: swift.bucket, Prefix: "k/" })))
          .Uploads ?? [];
      const env = {
        ...swift.env,
        PLUGIN_REBUILD: "true",
        PLUGIN_MOUNT: "big",
        PLUGIN_CACHE_KEY: "k",
        PLUGIN_PART_SIZE_MB: "5",
        HOME: dir,
      };
      // Interrupt once the multipart upload exists (parts are on their way).
      const run = await interrupt(env, `${dir}/work`, async () => (await uploads()).length > 0, "SIGINT");
      assert(run.sent, `the save ended before its multipart upload started:\n${run.stderr}`);
      assertEquals(run.code, 130, run.stderr);
      const line = run.stderr.split("\n").filter((l) => l.includes(`msg="cancelled by SIGINT`));
      assertEquals(line.length, 1, run.stderr);
      assert(line[0].includes("s3 upload of k/big aborted"), line[0]);
      assertEquals(await uploads(), [], "the multipart upload was not aborted");
      const head = await client.send(new HeadObjectCommand({ Bucket: swift.bucket, Key: "k/big" })).catch((
        e,
      ) => e);
      assertEquals(head?.$metadata?.httpStatusCode, 404, "a cancelled save left an object");
      assert(!run.stderr.includes(swift.secretKey), "the secret key was logged");
    } finally {
      client.destroy();
      await Deno.remove(dir, { recursive: true });
      await swift.stop();
    }
  },
});
