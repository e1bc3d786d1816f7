#!/usr/bin/env bash
# Agent relay benchmark, in one run against the same nginx on loopback:
#   1. resident memory of tollgate and of the agent with N (1 000) idle tunnels (measured
#      first, while the heaps are fresh);
#   2. bulk throughput (1 GiB download) through tollgate, direct route vs agent route, both as
#      plain http:// (absolute-form) and through a CONNECT tunnel; nginx alone for reference;
#   3. requests/s (1 KiB responses, wrk) through tollgate, direct route vs agent route.
#
#   bash bench/agent.sh                  # installs wrk and nginx (Debian) if missing
#   DURATION=10s CONNS=64 TUNNELS=1000 bash bench/agent.sh
#   PARTS="bulk" bash bench/agent.sh     # only some of: memory bulk rps
#
# Prints Markdown tables ready for BENCHMARKS.md.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
TUNNELS=${TUNNELS:-1000}
PARTS=${PARTS:-memory bulk rps}
BULK=${BULK:-512M}
ROUNDS=${ROUNDS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tollgate-agent-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

. "$(dirname "$0")/lib.sh"
need_packages wrk nginx curl python3

UP=$(free_port); TG=$(free_port); TW=$(free_port); RL=$(free_port)

# --- upstream: nginx with a 1 KiB and a large body ---
mkdir -p "$WORK/www" "$WORK/nginx"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/1k"
truncate -s "$BULK" "$WORK/www/big"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  client_header_timeout 600s;
  sendfile on;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$UP; root $WORK/www; }
}
CONF
nginx -c "$WORK/nginx.conf"

# --- tollgate and one agent ---
(cd "$ROOT" && cargo build --release --quiet)
TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
mkdir -p "$WORK/policies"
cat > "$WORK/policies/bench.toml" <<CONF
[[policy]]
name = "bench-direct"
orgs = ["direct"]
route = "direct"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [$UP]

[[policy]]
name = "bench-agent"
orgs = ["agent"]
route = "agent:bench"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [$UP]
CONF
"$TOLLGATE" serve --data "$WORK/data" --policies "$WORK/policies" \
  --proxy-listen "127.0.0.1:$TG" --web-listen "127.0.0.1:$TW" --relay-listen "127.0.0.1:$RL" \
  --log-format json ${TOLLGATE_FLAGS:-} \
  >"$WORK/tollgate.out" 2>"$WORK/tollgate.log" &
TG_PID=$!
PIDS+=($TG_PID)
for p in $UP $TG $RL; do wait_port "$p"; done
start_agent "$TOLLGATE" "$WORK/data" "$RL" "$TW"
DIRECT=$("$TOLLGATE" token mint --data "$WORK/data" --org direct --user bench --ttl 1h)
AGENT=$("$TOLLGATE" token mint --data "$WORK/data" --org agent --user bench --ttl 1h)
for t in "$DIRECT" "$AGENT"; do
  body=$(curl -s -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: Bearer $t" "http://127.0.0.1:$UP/1k")
  [ "${#body}" = 1024 ] || { echo "sanity check failed: $body" >&2; exit 1; }
done

cat > "$WORK/proxy.lua" <<LUA
wrk.path = "http://127.0.0.1:$UP/1k"
wrk.headers["Host"] = "127.0.0.1:$UP"
wrk.headers["Proxy-Authorization"] = os.getenv("PROXY_AUTH")
LUA

# --- memory with idle tunnels (first, before bulk traffic grows the heaps) ---
if [[ " $PARTS " == *" memory "* ]]; then
  echo "### Memory with $TUNNELS idle tunnels (each used for one 1 KiB request, then left open)"
  echo
  echo '```'
  python3 "$ROOT/bench/agent_idle.py" "127.0.0.1:$TG" "127.0.0.1:$UP" "$TUNNELS" \
    "agent route:$AGENT:tollgate=$TG_PID,agent=$AGENT_PID" \
    "direct route:$DIRECT:tollgate=$TG_PID"
  echo '```'
  echo
fi

# --- bulk throughput ---
if [[ " $PARTS " == *" bulk "* ]]; then
  # CPU time (user + system, clock ticks) of a process, to report CPU seconds per GiB moved:
  # unlike MiB/s, that does not depend on what else the machine is running.
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  HZ=$(getconf CLK_TCK)
  GIB=$(numfmt --from=iec "$BULK" | awk '{print $1 / 1073741824}')
  one() { # curl-args...  → "MiB/s tollgate-CPU-s/GiB agent-CPU-s/GiB" of one download
    local t0 a0 t1 a1 speed
    t0=$(ticks "$TG_PID"); a0=$(ticks "$AGENT_PID")
    speed=$(curl -s -o /dev/null -w '%{speed_download}' "$@" "http://127.0.0.1:$UP/big")
    t1=$(ticks "$TG_PID"); a1=$(ticks "$AGENT_PID")
    awk -v s="$speed" -v t=$((t1 - t0)) -v a=$((a1 - a0)) -v hz="$HZ" -v g="$GIB" \
      'BEGIN {printf "%.0f %.2f %.2f\n", s / 1048576, t / hz / g, a / hz / g}'
  }
  DP=(-x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: Bearer $DIRECT")
  AP=(-x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: Bearer $AGENT")
  # Interleaved rounds, so a burst of load from elsewhere hits every path alike.
  for _ in $(seq 1 "$ROUNDS"); do
    one >> "$WORK/bulk-nginx"
    one "${DP[@]}" >> "$WORK/bulk-direct"
    one "${AP[@]}" >> "$WORK/bulk-agent"
    one -p "${DP[@]}" >> "$WORK/bulk-direct-connect"
    one -p "${AP[@]}" >> "$WORK/bulk-agent-connect"
  done
  # Median of each column.
  med() { for c in 1 2 3; do cut -d' ' -f$c "$1" | sort -n | awk '{v[NR]=$1} END {printf "%s ", v[int((NR+1)/2)]}'; done; }
  row() { set -- "$1" $(med "$WORK/bulk-$2"); printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }
  echo "### Bulk download ($BULK per download, curl; median of $ROUNDS interleaved rounds)"
  echo
  echo "| path | MiB/s | tollgate CPU s/GiB | agent CPU s/GiB |"
  echo "|---|---|---|---|"
  set -- $(med "$WORK/bulk-nginx"); echo "| nginx alone | $1 | - | - |"
  row "tollgate, direct route, plain http" direct
  row "tollgate, agent route, plain http" agent
  row "tollgate, direct route, CONNECT" direct-connect
  row "tollgate, agent route, CONNECT" agent-connect
  echo
  awk -v a="$(med "$WORK/bulk-agent" | cut -d' ' -f1)" -v d="$(med "$WORK/bulk-direct" | cut -d' ' -f1)" \
    -v at="$(med "$WORK/bulk-agent-connect" | cut -d' ' -f1)" -v dt="$(med "$WORK/bulk-direct-connect" | cut -d' ' -f1)" \
    'BEGIN {printf "agent/direct bytes/s: plain http %.2f, CONNECT %.2f\n\n", a/d, at/dt}'
fi

# --- requests/s ---
if [[ " $PARTS " == *" rps "* ]]; then
  rps() { # label token
    local out
    out=$(PROXY_AUTH="Bearer $2" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/proxy.lua" "http://127.0.0.1:$TG")
    local r p50 p99 errs
    r=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$r" "$p50" "$p99" "${errs:-none}"
    echo "$r" > "$WORK/rps-$3"
  }
  echo "### Requests/s (1 KiB, wrk -t$THREADS -c$CONNS -d$DURATION, plain http through tollgate)"
  echo
  echo "| route | requests/s | p50 | p99 | errors |"
  echo "|---|---|---|---|---|"
  rps "direct" "$DIRECT" direct
  rps "agent" "$AGENT" agent
  echo
  awk -v a="$(cat "$WORK/rps-agent")" -v d="$(cat "$WORK/rps-direct")" 'BEGIN {printf "agent/direct: %.2f\n\n", a/d}'
fi

echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(rustc --version | cut -d' ' -f1-2)"
