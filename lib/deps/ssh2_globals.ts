/**
 * A global `__dirname` for ssh2 inside a `deno bundle` file: ssh2's poly1305
 * (emscripten output) reads `__dirname` when it believes it runs under Node.
 * Deno's CommonJS loader provides it when ssh2 runs from `node_modules`, but
 * the bundle turns everything into one ES module, where it is undefined and
 * the sftp backend would fail with "__dirname is not defined". The value is
 * never used to read a file (the WebAssembly is inlined).
 *
 * @module
 */
const scope = globalThis as { __dirname?: string };
scope.__dirname ??= "/";
