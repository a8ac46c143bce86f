/**
 * `ssh2` (SSH client and SFTP for the sftp backend). The one place its version is pinned.
 *
 * Only the client and the key parser are imported, by their paths inside the package: the package's index
 * also loads the SSH server, the key generator and the HTTP agents (Node's `http` and `https`), which the
 * sftp backend never uses and which cost start-up time before the first packet.
 *
 * @module
 */
import "./ssh2_globals.ts"; // evaluated before ssh2: see there
export { default as Client } from "npm:ssh2@1.17.0/lib/client.js";
export { parseKey } from "npm:ssh2@1.17.0/lib/protocol/keyParser.js";
