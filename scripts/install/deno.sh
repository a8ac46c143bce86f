#!/usr/bin/env bash
# Installs Deno 2.9.6 from the npm registry when `deno` is missing (the only route that works here).
set -euo pipefail
if command -v deno >/dev/null 2>&1; then exit 0; fi
npm install -g --silent deno@2.9.6 >/dev/null 2>&1 || npm install -g deno@2.9.6
command -v deno >/dev/null 2>&1 || { export PATH="$(npm prefix -g)/bin:$PATH"; command -v deno; }
