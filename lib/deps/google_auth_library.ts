/** `google-auth-library`: the one place its version is pinned. @module */
export * from "npm:google-auth-library@11.3.4";
