#!/usr/bin/env bash
# Interoperability suite: installs what it needs (Debian chromium, npm packages, Python
# requests), builds tollgate and runs every *.mjs suite in this directory (demo.mjs: the
# `tollgate demo` tour in Chromium).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v curl >/dev/null || need_apt+=(curl)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import requests' 2>/dev/null || python3 -m pip install -q requests
npm ci --no-audit --no-fund --silent

(cd "$ROOT" && cargo build --quiet)
export TOLLGATE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tollgate"

status=0
for suite in ./*.mjs; do
  echo "== $suite"
  node "$suite" || status=1
done
exit $status
