/** `tar-stream` (tests only: an independent tar writer for hostile archives). The one place its version is pinned. @module */
export { default } from "npm:tar-stream@3.2.2";
