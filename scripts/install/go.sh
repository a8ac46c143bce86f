#!/usr/bin/env bash
# Installs Debian's Go toolchain (golang-go) for the tests that compare with Go's own standard library:
# text/template (the key template differential test) and archive/tar (archives laid out as the Go plugin
# writes them). Only the standard library is used: nothing is fetched from the Go module proxy.
# Idempotent and quiet; instant when `go` is already on PATH. Needs root (or sudo) and apt.
set -euo pipefail
if command -v go >/dev/null 2>&1 || [ -x /usr/lib/go/bin/go ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "go.sh: apt-get is missing: install the Go toolchain (golang-go) with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "go.sh: run as root (or install sudo) to apt-get install golang-go" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends golang-go >/dev/null
echo "go.sh: installed $(go version 2>/dev/null || /usr/lib/go/bin/go version)"
