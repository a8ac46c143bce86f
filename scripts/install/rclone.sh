#!/usr/bin/env bash
# Installs rclone (Debian's) for the benchmark: the independent, tuned transfer client the bench compares
# ci-cache against (`tar | zstd -T0 | rclone rcat` and `rclone cat | zstd -d | tar -x`). Idempotent and
# quiet; fast when already installed. Needs root (or sudo) and apt. The test suite does not use it.
set -euo pipefail
if command -v rclone >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "rclone.sh: apt-get is missing: install rclone with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "rclone.sh: run as root (or install sudo) to apt-get install rclone" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends rclone zstd >/dev/null
echo "rclone.sh: installed $(rclone version | head -1)"
