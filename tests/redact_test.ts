/**
 * Tests of `lib/storage/transfer/redact.ts` and of its use where errors
 * become text (`errorText`) and where lines are written (`Logger`): signed
 * URLs of every backend lose their signatures, registered secrets vanish,
 * and harmless text (cache keys, expiry, versions) stays readable.
 *
 * @module
 */
import { assert, assertEquals, assertStringIncludes } from "./assert.ts";
import { redact, registerSecret } from "../lib/storage/transfer/redact.ts";
import { errorText, Logger } from "../lib/log.ts";

const AZURE =
  "https://acct.blob.core.windows.net/c/key%2Fnode_modules?sv=2025-01-05&se=2026-11-28T10%3A00%3A00Z&sr=b&sp=r&sig=AbC%2Bdef%3D";
const S3 = "https://bucket.s3.eu-west-1.amazonaws.com/k/o?X-Amz-Algorithm=AWS4-HMAC-SHA256" +
  "&X-Amz-Credential=AKIAEXAMPLE%2F20261128%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261128T000000Z" +
  "&X-Amz-Expires=900&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE&X-Amz-Signature=deadbeefcafe&partNumber=3";
const GCS = "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256" +
  "&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20261128&X-Goog-Signature=0123456789abcdef";

Deno.test("redact: Azure SAS URL keeps version, expiry and permissions, loses the signature", () => {
  const out = redact(`error sending request for url (${AZURE}): connection reset`);
  assert(!out.includes("AbC%2Bdef"), out);
  assertStringIncludes(out, "sig=***");
  assertStringIncludes(out, "sv=2025-01-05");
  assertStringIncludes(out, "sp=r");
  assertStringIncludes(out, "key%2Fnode_modules");
  assertStringIncludes(out, "): connection reset");
});

Deno.test("redact: S3 and GCS presigned URLs lose credential, token and signature", () => {
  const out = redact(`${S3} and ${GCS}`);
  for (const secret of ["AKIAEXAMPLE", "FwoGZXIvYXdzEXAMPLE", "deadbeefcafe", "0123456789abcdef", "sa%40p"]) {
    assert(!out.includes(secret), `${secret} left in ${out}`);
  }
  assertStringIncludes(out, "X-Amz-Expires=900");
  assertStringIncludes(out, "partNumber=3");
});

Deno.test("redact: a bare SAS token, bearer and shared-key authorization values are masked", () => {
  const out = redact(
    'sas "?sv=2025-01-05&sig=S3cr3tSig" Authorization: Bearer eyJhbGciOi.payload.sig and SharedKey acct:Zm9vYmFy=',
  );
  assert(!out.includes("S3cr3tSig") && !out.includes("eyJhbGciOi") && !out.includes("Zm9vYmFy"), out);
});

Deno.test("redact: cache keys and ordinary logfmt stay readable", () => {
  const line = 'level=info msg="save started" key=main/node_modules backend=azure signature_check=ok';
  assertEquals(redact(line), line);
});

Deno.test("redact: registered secrets, also URL-encoded, are masked in errorText and in every logger", () => {
  const secret = "pa/ss+word=" + crypto.randomUUID();
  registerSecret(secret);
  const err = new Error("outer", { cause: new Error(`connect failed with ${encodeURIComponent(secret)}`) });
  const text = errorText(err);
  assert(!text.includes(secret) && !text.includes(encodeURIComponent(secret)), text);
  // A logger that was never told about the secret masks it too, and masks URLs in string fields.
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), format: "json" });
  log.error("failed", { error: err, url: AZURE, raw: `value ${secret}` });
  assert(!lines[0].includes(secret) && !lines[0].includes("AbC%2Bdef"), lines[0]);
});
