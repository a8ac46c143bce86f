/** `ssh2` (SSH client and SFTP for the sftp backend). The one place its version is pinned. @module */
import "./ssh2_globals.ts"; // evaluated before ssh2: see there
export { default } from "npm:ssh2@1.17.0";
