#!/usr/bin/env bash
# Caches Azurite (the Azure Storage emulator the azure tests and benchmark run) in Deno's npm cache, so the
# first test does not spend its time downloading. Idempotent and quiet: instant when already cached.
# Azurite is run as `deno run -A --no-config npm:azurite@3.37.0/azurite-blob …` (scripts/servers/azurite.ts);
# nothing is installed outside DENO_DIR, and nothing is added to the project's node_modules.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
SPEC="npm:azurite@3.37.0/azurite-blob"
cd "${TMPDIR:-/tmp}"
command -v deno >/dev/null 2>&1 || { echo "azurite.sh: deno is missing: bash scripts/install/deno.sh" >&2; exit 1; }
reload=()
forced azurite && reload=(--reload=npm:azurite)
if ! deno cache --no-config --quiet "${reload[@]}" "$SPEC" >/dev/null 2>/tmp/ci-cache-azurite-install.log; then
  echo "azurite.sh: could not fetch $SPEC from the npm registry: see /tmp/ci-cache-azurite-install.log" >&2
  exit 1
fi
forced azurite && echo "azurite.sh: cached $SPEC"
command -v openssl >/dev/null 2>&1 || {
  echo "azurite.sh: openssl is missing (the azure OAuth tests make a test CA with it): apt-get install openssl" >&2
  exit 1
}
exit 0
