#!/usr/bin/env bash
# Installs the tar readers the interop tests extract our archives with: bsdtar (libarchive-tools) and
# busybox (its `tar`), next to GNU tar, gzip, zstd and python3 (tarfile), which are checked to be present.
# Idempotent and quiet; instant when everything is there. Needs root (or sudo) and apt.
set -euo pipefail
PACKAGES=()
command -v bsdtar >/dev/null 2>&1 || PACKAGES+=(libarchive-tools)
command -v busybox >/dev/null 2>&1 || PACKAGES+=(busybox)
command -v python3 >/dev/null 2>&1 || PACKAGES+=(python3)
command -v zstd >/dev/null 2>&1 || PACKAGES+=(zstd)
if [ ${#PACKAGES[@]} -eq 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tar-readers.sh: apt-get is missing: install ${PACKAGES[*]} with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "tar-readers.sh: run as root (or install sudo) to apt-get install ${PACKAGES[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "tar-readers.sh: installed ${PACKAGES[*]}"
