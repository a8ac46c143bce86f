/** `@azure/storage-blob`: the one place its version is pinned (a remote `deno run` reads no import map). @module */
export * from "npm:@azure/storage-blob@12.34.0";
