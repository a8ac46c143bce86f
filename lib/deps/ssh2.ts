/** `ssh2` (SSH client and SFTP for the sftp backend). The one place its version is pinned. @module */
export { default } from "npm:ssh2@1.17.0";
