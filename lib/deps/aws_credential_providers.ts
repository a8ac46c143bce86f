/** `@aws-sdk/credential-providers`: the one place its version is pinned (keep in step with client-s3). @module */
export * from "npm:@aws-sdk/credential-providers@3.1175.0";
