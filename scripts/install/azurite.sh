#!/usr/bin/env bash
# Pre-caches Azurite (the Azure Storage emulator the azure tests and benchmark run) in Deno's npm cache,
# so the first test does not spend its time downloading. Idempotent: instant when already cached.
# Azurite is run as `deno run -A --no-config npm:azurite@3.37.0/azurite-blob …` (scripts/servers/azurite.ts);
# nothing is installed outside DENO_DIR, and nothing is added to the project's node_modules.
set -euo pipefail
cd "${TMPDIR:-/tmp}"
deno cache --no-config --quiet npm:azurite@3.37.0/azurite-blob >/dev/null 2>&1 ||
  deno cache --no-config npm:azurite@3.37.0/azurite-blob
command -v openssl >/dev/null 2>&1 || {
  echo "openssl is missing (the azure OAuth tests generate a test CA with it): apt-get install openssl" >&2
  exit 1
}
