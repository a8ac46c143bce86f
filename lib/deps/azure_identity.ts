/** `@azure/identity`: the one place its version is pinned. @module */
export * from "npm:@azure/identity@4.14.1";
