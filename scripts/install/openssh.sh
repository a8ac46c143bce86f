#!/usr/bin/env bash
# Installs OpenSSH's server (sshd) and client tools from Debian for the sftp tests and benchmark, and a
# dedicated system user for the password-auth tests. Idempotent and quiet: instant when all is there.
# sshd is never started as a system service here: scripts/servers/sshd.ts runs its own instance per test
# run on 127.0.0.1 with its own config, host key and authorized_keys in a temp dir.
#
# The test user `cicache-sftp` (no home, login shell /usr/sbin/nologin: it can only use internal-sftp) gets
# the fixed test password below; sshd checks passwords through the system's shadow file (UsePAM no).
set -euo pipefail
TEST_USER="${CICACHE_SFTP_TEST_USER:-cicache-sftp}"
TEST_PASSWORD="${CICACHE_SFTP_TEST_PASSWORD:-cicache-sftp-test-password}"

if ! [ -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "openssh-server is missing and this is not root: run apt-get install openssh-server openssh-client as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Debian's maintainer scripts would start sshd as a service: forbid that while installing.
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  [ -e "$policy" ] && had_policy=1
  if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"; fi
  trap '[ "$had_policy" = 0 ] && rm -f "$policy"' EXIT
  # Other installs may hold the dpkg lock: wait for it rather than fail.
  apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  "${apt[@]}" install openssh-server openssh-client >/dev/null 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
    "${apt[@]}" install openssh-server openssh-client >/dev/null
  }
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || mkdir -p -m 0755 /run/sshd 2>/dev/null || true

if [ "$(id -u)" = 0 ]; then
  if ! id -u "$TEST_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$TEST_USER"
  fi
  # Set the password only when it differs (chpasswd rewrites /etc/shadow every time).
  # crypt(password, stored hash) gives the stored hash back when the password matches.
  current="$(getent shadow "$TEST_USER" | cut -d: -f2)"
  want=""
  if [ -n "$current" ] && command -v perl >/dev/null 2>&1; then
    want="$(perl -e 'print crypt($ARGV[0], $ARGV[1]) // ""' "$TEST_PASSWORD" "$current" 2>/dev/null || true)"
  fi
  if [ -z "$want" ] || [ "$want" != "$current" ]; then
    echo "$TEST_USER:$TEST_PASSWORD" | chpasswd
  fi
fi
