/** `yaml`: the one place its version is pinned (a remote `deno run` reads no import map). @module */
export * from "npm:yaml@2.9.1";
