/** `@smithy/node-http-handler`: the one place its version is pinned. @module */
export * from "npm:@smithy/node-http-handler@4.14.2";
