/** `@google-cloud/storage`: the one place its version is pinned. @module */
export * from "npm:@google-cloud/storage@8.4.0";
