/** `@smithy/fetch-http-handler`: the one place its version is pinned. @module */
export * from "npm:@smithy/fetch-http-handler@5.8.1";
