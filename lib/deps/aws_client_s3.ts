/** `@aws-sdk/client-s3`: the one place its version is pinned. @module */
export * from "npm:@aws-sdk/client-s3@3.1175.0";
