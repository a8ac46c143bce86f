#!/usr/bin/env bash
# Installs OpenStack Swift (proxy with s3api, account, container, object servers) from Debian/Ubuntu packages
# for the s3 backend tests, when it is not there yet. Idempotent and quiet; fast when already installed.
# Needs root (or sudo) and apt. Nothing is started here: scripts/servers/swift.ts starts Swift per test run,
# with its configs, rings and data in a temp dir.
set -euo pipefail
PACKAGES=(swift swift-proxy swift-account swift-container swift-object)
if [ -x /usr/bin/swift-proxy-server ] && [ -x /usr/bin/swift-ring-builder ] &&
  [ -x /usr/bin/swift-object-server ] && /usr/bin/python3 -c 'import swift.common.middleware.s3api' 2>/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "swift.sh: apt-get is missing: install OpenStack Swift (${PACKAGES[*]}) with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "swift.sh: run as root (or install sudo) to apt-get install ${PACKAGES[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# The packages' systemd units are not started in containers without systemd; the tests never use them.
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "swift.sh: installed OpenStack Swift $(dpkg-query -W -f='${Version}' swift-proxy)"
