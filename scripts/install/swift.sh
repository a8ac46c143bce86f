#!/usr/bin/env bash
# Installs OpenStack Swift (proxy with s3api, account, container, object servers) from Debian/Ubuntu packages
# for the s3 backend tests, when it is not there yet. Idempotent and quiet; fast when already installed.
# Needs root (or passwordless sudo) and apt; otherwise one line on stderr says what to do, exit 1.
# Nothing is started here: scripts/servers/swift.ts starts Swift per test run, in a temp dir.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PACKAGES=(swift swift-proxy swift-account swift-container swift-object)
present() {
  [ -x /usr/bin/swift-proxy-server ] && [ -x /usr/bin/swift-ring-builder ] &&
    [ -x /usr/bin/swift-object-server ] && /usr/bin/python3 -c 'import swift.common.middleware.s3api' 2>/dev/null
}
if ! forced swift && present; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "swift.sh: OpenStack Swift is missing and apt-get is not available: install ${PACKAGES[*]} with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "swift.sh: OpenStack Swift is missing and installing it needs root: run 'sudo bash scripts/install/swift.sh' once" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
  >/tmp/ci-cache-swift-install.log 2>&1; then
  echo "swift.sh: apt-get install ${PACKAGES[*]} failed: see /tmp/ci-cache-swift-install.log" >&2
  exit 1
fi
# The packages' systemd units are not started in containers without systemd; the tests never use them.
present || { echo "swift.sh: apt-get succeeded but /usr/bin/swift-proxy-server or s3api is still missing" >&2; exit 1; }
echo "swift.sh: installed OpenStack Swift $(dpkg-query -W -f='${Version}' swift-proxy)"
