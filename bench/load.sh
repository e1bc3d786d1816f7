#!/usr/bin/env bash
# Load test: wrk through tollgate against an nginx upstream on loopback, side by side in one
# run with direct, Squid and tinyproxy. 1 KiB responses, 64 connections.
#
#   bash bench/load.sh            # installs wrk, nginx, squid, tinyproxy (Debian) if missing
#   DURATION=20s CONNS=64 bash bench/load.sh
#
# Prints a Markdown table (requests/s and latency) ready for BENCHMARKS.md.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tollgate-load.XXXXXX)
chmod 755 "$WORK"  # nginx workers drop to an unprivileged user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/squid.pid" ] && kill "$(cat "$WORK/squid.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

need=()
for b in wrk nginx squid tinyproxy; do command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || [ -x "/usr/bin/$b" ] || need+=("$b"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >&2
  # Keep the packages' own services from starting: we run our own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  rm -f /usr/sbin/policy-rc.d
fi

. "$(dirname "$0")/lib.sh"
UP=$(free_port); SQ=$(free_port); TP=$(free_port); TG=$(free_port); TW=$(free_port)

# --- upstream: nginx serving a 1 KiB body ---------------------------------------------
nginx_1k "$UP"

# --- squid ---------------------------------------------------------------------------
mkdir -p "$WORK/squid"
cat > "$WORK/squid.conf" <<CONF
http_port 127.0.0.1:$SQ
http_access allow all
cache deny all
cache_mem 8 MB
access_log none
cache_log $WORK/squid/cache.log
pid_filename $WORK/squid.pid
coredump_dir $WORK/squid
shutdown_lifetime 1 seconds
CONF
squid -N -f "$WORK/squid.conf" >"$WORK/squid/out.log" 2>&1 &
PIDS+=($!)

# --- tinyproxy -------------------------------------------------------------------------
cat > "$WORK/tinyproxy.conf" <<CONF
Port $TP
Listen 127.0.0.1
Timeout 600
MaxClients 1024
Allow 127.0.0.1
LogLevel Critical
CONF
tinyproxy -d -c "$WORK/tinyproxy.conf" >"$WORK/tinyproxy.log" 2>&1 &
PIDS+=($!)

# --- tollgate ---------------------------------------------------------------------------
# TOLLGATE_BIN=path runs that binary instead (to compare two builds under the same load).
if [ -z "${TOLLGATE_BIN:-}" ]; then (cd "$ROOT" && cargo build --release --quiet); fi
TOLLGATE="${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate}"
mkdir -p "$WORK/policies"
cat > "$WORK/policies/load.toml" <<CONF
[[policy]]
name = "load"
route = "direct"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [$UP]
CONF
"$TOLLGATE" serve --data "$WORK/data" --policies "$WORK/policies" \
  --proxy-listen "127.0.0.1:$TG" --web-listen "127.0.0.1:$TW" --log-format "${LOG_FORMAT:-json}" \
  ${TOLLGATE_FLAGS:-} \
  >"$WORK/tollgate.out" 2>"$WORK/tollgate.log" &
PIDS+=($!)

for p in $UP $SQ $TP $TG; do wait_port "$p"; done
TOKEN=$("$TOLLGATE" token mint --data "$WORK/data" --org load --user wrk --ttl 1h)

# wrk cannot speak proxy natively: connect to the proxy and write absolute-form targets.
cat > "$WORK/proxy.lua" <<LUA
wrk.path = "http://127.0.0.1:$UP/1k"
wrk.headers["Host"] = "127.0.0.1:$UP"
local auth = os.getenv("PROXY_AUTH")
if auth and auth ~= "" then wrk.headers["Proxy-Authorization"] = auth end
LUA

# Sanity: every proxy returns the 1 KiB body.
for p in $SQ $TP $TG; do
  body=$(curl -s -x "http://127.0.0.1:$p" --proxy-header "Proxy-Authorization: Bearer $TOKEN" "http://127.0.0.1:$UP/1k")
  [ "${#body}" = 1024 ] || { echo "proxy on $p (squid $SQ, tinyproxy $TP, tollgate $TG) returned: $body" >&2; exit 1; }
done

run() { # name target [auth]
  local out
  out=$(PROXY_AUTH="${3:-}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency ${4:+-s "$4"} "$2")
  wrk_report "$1" <<<"$out"
}

echo "| path | requests/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
RUNS=${RUNS:-direct tollgate squid tinyproxy}
for r in $RUNS; do
  case $r in
    direct) run "direct (nginx)" "http://127.0.0.1:$UP/1k" ;;
    tollgate) run "tollgate" "http://127.0.0.1:$TG" "Bearer $TOKEN" "$WORK/proxy.lua" ;;
    squid) run "squid" "http://127.0.0.1:$SQ" "" "$WORK/proxy.lua" ;;
    tinyproxy) run "tinyproxy" "http://127.0.0.1:$TP" "" "$WORK/proxy.lua" ;;
  esac
done
echo
awk '{r[$1]=$NF} END {printf "tollgate/direct = %.2f, tollgate/squid = %.2f, tollgate/tinyproxy = %.2f\n", r["tollgate"]/r["direct"], r["tollgate"]/r["squid"], r["tollgate"]/r["tinyproxy"]}' "$WORK/rps"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); wrk -t$THREADS -c$CONNS -d$DURATION"
