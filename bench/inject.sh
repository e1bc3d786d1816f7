#!/usr/bin/env bash
# Load test of token injection: wrk through one tollgate, in one run, against the same nginx
# upstream (1 KiB responses), once for a host with no outbound application (plain forwarding)
# and once for a host bound to an app whose user has a fresh token (injection: app lookup,
# token read and unsealed from the store, Authorization set, body buffered for replay).
#
#   bash bench/inject.sh            # installs wrk and nginx (Debian) if missing
#   DURATION=20s CONNS=64 ROUNDS=3 bash bench/inject.sh
#
# Prints a Markdown table ready for BENCHMARKS.md and the injected/plain ratio.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tollgate-inject.XXXXXX)
chmod 755 "$WORK"  # nginx workers drop to an unprivileged user
TG_PID=
cleanup() {
  [ -n "$TG_PID" ] && kill "$TG_PID" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

need=()
for b in wrk nginx curl; do command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || need+=("$b"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >&2
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  rm -f /usr/sbin/policy-rc.d
fi

. "$(dirname "$0")/lib.sh"
UP=$(free_port); TG=$(free_port); TW=$(free_port)

# --- upstream: nginx serving a 1 KiB body (bench/lib.sh) ---
nginx_1k "$UP"

# --- tollgate with one app bound to "localhost" -----------------------------------------
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example seed_token)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$WORK/policies"
cat > "$WORK/policies/load.toml" <<CONF
[[policy]]
name = "load"
route = "direct"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32", "::1/128"]
  ports = [$UP]
  [[policy.allow]]
  hosts = ["localhost"]
  ports = [$UP]
  private = true
CONF
start() {
  "$BIN/tollgate" serve --data "$WORK/data" --policies "$WORK/policies" \
    --proxy-listen "127.0.0.1:$TG" --web-listen "127.0.0.1:$TW" --log-format json \
    >>"$WORK/tollgate.out" 2>>"$WORK/tollgate.log" &
  TG_PID=$!
  wait_port "$TG"; wait_port "$TW"
}
start
ADMIN=$("$BIN/tollgate" token mint --data "$WORK/data" --org load --user admin --role admin --ttl 1h)
TOKEN=$("$BIN/tollgate" token mint --data "$WORK/data" --org load --user wrk --ttl 1h)
curl -sf -o /dev/null -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  "http://127.0.0.1:$TW/v1/apps" -d @- <<JSON
{"id": "api", "name": "API", "approval_prompt": "ok",
 "authorize_url": "http://127.0.0.1:$UP/authorize", "token_url": "http://127.0.0.1:$UP/token",
 "client_id": "c", "client_secret": "s", "scopes": [], "egress_policy": "load",
 "domains": ["localhost"], "upstream_tls": false}
JSON
kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true; TG_PID=
"$BIN/examples/seed_token" "$WORK/data" load api wrk "bench-access-token" >&2
start

# Sanity: both paths return the body, and the second one is injected.
for host in 127.0.0.1 localhost; do
  body=$(curl -s -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: Bearer $TOKEN" "http://$host:$UP/1k")
  [ "${#body}" = 1024 ] || { echo "tollgate returned for $host: $body" >&2; exit 1; }
done
sleep 1  # the access log writer is buffered
grep -q '"injected":true' "$WORK/tollgate.log" || { echo "no injected request logged" >&2; exit 1; }

cat > "$WORK/proxy.lua" <<LUA
wrk.path = os.getenv("TARGET")
wrk.headers["Host"] = os.getenv("HOSTHDR")
wrk.headers["Proxy-Authorization"] = os.getenv("PROXY_AUTH")
LUA

run() { # name host
  local out
  out=$(TARGET="http://$2:$UP/1k" HOSTHDR="$2:$UP" PROXY_AUTH="Bearer $TOKEN" \
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/proxy.lua" "http://127.0.0.1:$TG")
  wrk_report "$1" <<<"$out"
}

echo "| path | requests/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
for _ in $(seq 1 "$ROUNDS"); do
  run "plain forwarding (127.0.0.1, no app)" 127.0.0.1
  run "injection (localhost, fresh token)" localhost
done
echo
awk '/^plain/ {p+=$NF; np++} /^injection/ {i+=$NF; ni++} END {printf "injected/plain = %.2f (mean of %d rounds)\n", (i/ni)/(p/np), np}' "$WORK/rps"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); wrk -t$THREADS -c$CONNS -d$DURATION"
