/** `@smithy/signature-v4`: the SDK's SigV4 signer, for the differential test of `s3/sigv4.ts`. @module */
export * from "npm:@smithy/signature-v4@5.7.5";
