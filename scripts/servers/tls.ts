/**
 * Test-only TLS material: a throwaway certificate authority and a CA-signed
 * leaf certificate for `127.0.0.1` and `localhost`, made with `openssl` at
 * test time (nothing secret is checked in).
 *
 * Servers that must speak HTTPS in tests (Azurite in OAuth mode, the fake
 * Entra token endpoint) use the leaf; clients trust the CA, e.g. through
 * `NODE_EXTRA_CA_CERTS` for SDKs on `node:https` (set it before the process
 * starts), or `Deno.createHttpClient({ caCerts })` for `fetch`. A CA-signed
 * leaf is used instead of a self-signed certificate because rustls (Deno)
 * refuses a self-signed end-entity certificate used as its own trust anchor.
 *
 * @module
 */

/** Paths and PEM texts of the generated CA and leaf. */
export interface TestTls {
  /** Directory holding the files (removed by {@link TestTls.cleanup}). */
  dir: string;
  /** CA certificate file (PEM): what clients trust. */
  caFile: string;
  /** Leaf certificate file (PEM) for 127.0.0.1 and localhost. */
  certFile: string;
  /** Leaf private key file (PEM, unencrypted). */
  keyFile: string;
  /** Contents of {@link caFile}. */
  caPem: string;
  /** Contents of {@link certFile}. */
  certPem: string;
  /** Contents of {@link keyFile}. */
  keyPem: string;
  /** Deletes the directory. */
  cleanup(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/**
 * Generates a fresh CA and a leaf certificate for `127.0.0.1`/`localhost`
 * (ECDSA P-256, valid two days) in a new temporary directory, or in `dir`
 * when given.
 *
 * @example
 * ```ts
 * const tls = await makeTestTls();
 * const server = Deno.serve({ port: 0, cert: tls.certPem, key: tls.keyPem }, () => new Response("ok"));
 * const client = Deno.createHttpClient({ caCerts: [tls.caPem] });
 * ```
 */
export async function makeTestTls(dir?: string): Promise<TestTls> {
  const root = dir ?? await Deno.makeTempDir({ prefix: "ci-cache-tls-" });
  await Deno.mkdir(root, { recursive: true });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=ci-cache test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], root);
  await openssl(["req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"], root);
  await Deno.writeTextFile(
    `${root}/leaf.ext`,
    [
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "",
    ].join("\n"),
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "leaf.pem",
    "-days",
    "2",
    "-extfile",
    "leaf.ext",
  ], root);
  const caFile = `${root}/ca.pem`;
  const certFile = `${root}/leaf.pem`;
  const keyFile = `${root}/leaf.key`;
  return {
    dir: root,
    caFile,
    certFile,
    keyFile,
    caPem: await Deno.readTextFile(caFile),
    certPem: await Deno.readTextFile(certFile),
    keyPem: await Deno.readTextFile(keyFile),
    cleanup: () => Deno.remove(root, { recursive: true }).catch(() => {}),
  };
}
