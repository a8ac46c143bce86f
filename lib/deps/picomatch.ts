/** `picomatch` (glob matching for mounts and excludes). The one place its version is pinned. @module */
// @ts-types="npm:@types/picomatch@4.0.3"
export { default } from "npm:picomatch@4.0.3";
