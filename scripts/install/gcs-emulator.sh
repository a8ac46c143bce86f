#!/usr/bin/env bash
# Installs the Cloud Storage emulator (firebase-tools, pinned) for the GCS tests into .servers/firebase,
# when it is not there yet. Idempotent and quiet; fast when already installed. Needs node + npm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
VERSION="15.34.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="$ROOT/.servers/firebase"
PKG="$DIR/node_modules/firebase-tools/package.json"
if ! forced gcs-emulator && [ -f "$PKG" ] && grep -q "\"version\": \"$VERSION\"" "$PKG"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "gcs-emulator.sh: the GCS emulator is missing and npm is not available: install node and npm (apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"name":"ci-cache-gcs-emulator","private":true}' >"$DIR/package.json"
if ! npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error --omit=optional "firebase-tools@$VERSION" \
  >/tmp/ci-cache-gcs-install.log 2>&1; then
  echo "gcs-emulator.sh: npm install firebase-tools@$VERSION failed: see /tmp/ci-cache-gcs-install.log" >&2
  exit 1
fi
echo "gcs-emulator.sh: installed firebase-tools $VERSION in $DIR"
