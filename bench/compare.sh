#!/usr/bin/env bash
# Every path of the performance targets (BENCHMARKS.md) in one run, side by side with the anchors on the same machine: direct
# to nginx, nginx as a reverse proxy with pooled upstream connections, Squid (no cache), and
# tollgate with its JSON access log on (stderr to a file, as in production).
#
#   bash bench/compare.sh                       # installs wrk, nginx, squid (Debian) if missing
#   DURATION=8s CONNS=64 ROUNDS=3 bash bench/compare.sh   # each row: median of ROUNDS
#   PARTS="plain close" bash bench/compare.sh   # only some of:
#                                               #   plain close inject tunnel bulk agent idle p99
#                                               #   (and hold: keep it all up for HOLD seconds)
#   PROFILE="tollgate tollgate-inject" ...      # perf record tollgate during these rows' first
#                                               # round; flamegraph SVGs into bench/flamegraphs/
#                                               # (PROFILE_DIR=DIR keeps the folded stacks)
#
# wrk runs with 1 thread (the issue's setup: wrk -t1 -c64 -d8s, 1 KiB answers). Tunnelled
# requests (CONNECT, then TLS, then HTTP/1.1 or HTTP/2 inside) are driven by
# examples/loadgen.rs, which also drives plain forwarding in the same part so that the ratio
# compares one client with itself. Prints Markdown tables and the target checks.
set -euo pipefail

DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
PARTS=${PARTS:-plain close inject tunnel bulk agent idle p99}
ROUNDS=${ROUNDS:-3}
BULK=${BULK:-1G}
IDLE=${IDLE:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tollgate-compare.XXXXXX)
chmod 755 "$WORK"  # nginx workers drop to an unprivileged user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"  # the idle part holds 10 000 connections on each side

. "$(dirname "$0")/lib.sh"
need_packages wrk nginx squid curl openssl python3
if [ -n "${PROFILE:-}" ]; then
  command -v perf >/dev/null || { apt-get update -qq >&2; apt-get install -y -qq linux-perf >&2; }
  command -v inferno-flamegraph >/dev/null || cargo install --quiet inferno >&2
fi
UP=$(free_port); UPS=$(free_port); RP=$(free_port); SQ=$(free_port)
TG=$(free_port); TW=$(free_port); RL=$(free_port)

# --- nginx: the upstream (1 KiB over http and https with h2, a large body) and the reverse
# proxy anchor (a second process, keep-alive pool of 64 to the upstream) -------------------
mkdir -p "$WORK/www"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/1k"
truncate -s "$BULK" "$WORK/www/big"
# A CA (tollgate's --upstream-ca-file) and the upstream's certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-upstream-ca -keyout "$WORK/up-ca.key" -out "$WORK/up-ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/up.key" -out "$WORK/up.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$WORK/up.ext"
openssl x509 -req -in "$WORK/up.csr" -CA "$WORK/up-ca.pem" -CAkey "$WORK/up-ca.key" \
  -CAcreateserial -days 2 -extfile "$WORK/up.ext" -out "$WORK/up.pem" 2>/dev/null
NGINX_COMMON="access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  client_header_timeout 600s; sendfile on;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;"
# nginx_conf NAME HTTP-BLOCK-BODY: a one-worker nginx writing its pid and errors under $WORK.
nginx_conf() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1.conf" <<CONF
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1/error.log;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  $NGINX_COMMON
  $2
}
CONF
}
nginx_conf nginx "server { listen 127.0.0.1:$UP; root $WORK/www; }
  server {
    listen 127.0.0.1:$UPS ssl http2; root $WORK/www;
    ssl_certificate $WORK/up.pem; ssl_certificate_key $WORK/up.key;
  }"
nginx_conf rp "upstream origin { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$RP;
    location / {
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_buffering on;
    }
  }"
nginx -c "$WORK/nginx.conf"
nginx -c "$WORK/rp.conf"

# --- squid, no cache, no access log ---------------------------------------------------------
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

# --- tollgate: org "bench" direct (plain, intercepted by a method limit on the https port,
# and one app bound to "localhost" for injection), org "agent" through one agent ------------
(cd "$ROOT" && cargo build --release --quiet --bin tollgate --example seed_token --example loadgen)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$WORK/policies"
cat > "$WORK/policies/bench.toml" <<CONF
[[policy]]
name = "bench"
orgs = ["bench"]
route = "direct"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [$UP]
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [$UPS]
  methods = ["GET"]
  [[policy.allow]]
  hosts = ["localhost"]
  ports = [$UP]
  private = true

[[policy]]
name = "bench-agent"
orgs = ["agent"]
route = "agent:bench"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [$UP]
CONF
TG_PID=
start_tollgate() {
  "$BIN/tollgate" serve --data "$WORK/data" --policies "$WORK/policies" \
    --proxy-listen "127.0.0.1:$TG" --web-listen "127.0.0.1:$TW" --relay-listen "127.0.0.1:$RL" \
    --upstream-ca-file "$WORK/up-ca.pem" --log-format json \
    --max-connections 20000 --max-connections-per-caller 20000 ${TOLLGATE_FLAGS:-} \
    >>"$WORK/tollgate.out" 2>>"$WORK/tollgate.log" &
  TG_PID=$!
  wait_port "$TG"; wait_port "$TW"
}
start_tollgate
create_app "$TW" "$BIN/tollgate" "$WORK/data" bench bench "$UP"
kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true
"$BIN/examples/seed_token" "$WORK/data" bench api wrk "bench-access-token" >&2
start_tollgate
PIDS+=($TG_PID)
start_agent "$BIN/tollgate" "$WORK/data" "$RL" "$TW"
TOKEN="Bearer $("$BIN/tollgate" token mint --data "$WORK/data" --org bench --user wrk --ttl 2h)"
AGENT="Bearer $("$BIN/tollgate" token mint --data "$WORK/data" --org agent --user wrk --ttl 2h)"
"$BIN/tollgate" ca export --data "$WORK/data" > "$WORK/tollgate-ca.pem"
for p in $UP $UPS $RP $SQ $RL; do wait_port "$p"; done

# Sanity: every path returns the 1 KiB body, and injection really injects.
check() { # name expected-length curl-args...
  local name=$1 want=$2; shift 2
  local body; body=$(curl -s "$@")
  [ "${#body}" = "$want" ] || { echo "sanity check '$name' failed: ${body:0:300}" >&2; exit 1; }
}
check direct 1024 "http://127.0.0.1:$UP/1k"
check nginx-rp 1024 "http://127.0.0.1:$RP/1k"
check squid 1024 -x "http://127.0.0.1:$SQ" "http://127.0.0.1:$UP/1k"
check tollgate 1024 -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $TOKEN" "http://127.0.0.1:$UP/1k"
check agent 1024 -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $AGENT" "http://127.0.0.1:$UP/1k"
check intercepted 1024 -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $TOKEN" \
  --cacert "$WORK/tollgate-ca.pem" "https://127.0.0.1:$UPS/1k"
check inject 1024 -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $TOKEN" "http://localhost:$UP/1k"
sleep 0.3  # the access log is flushed every 100 ms
grep -q '"injected":true\|"app":"api"' "$WORK/tollgate.log" \
  || { echo "sanity check 'inject': the access line names no app" >&2; tail -2 "$WORK/tollgate.log" >&2; exit 1; }

# --- measuring ----------------------------------------------------------------------------
declare -A R  # part/name -> figure
PROF_PID=
profile_start() { # row: profiled when PROFILE names it (its first round only)
  [[ " ${PROFILE:-} " == *" $1 "* && "${ROUND:-1}" = 1 ]] || return 0
  perf record -F 999 --call-graph "${CALLGRAPH:-dwarf,32768}" -p "$TG_PID" -o "$WORK/perf.data" >/dev/null 2>&1 &
  PROF_PID=$!
}
profile_stop() { # row
  [ -n "$PROF_PID" ] || return 0
  kill -INT "$PROF_PID"; wait "$PROF_PID" 2>/dev/null || true; PROF_PID=
  local out="$ROOT/bench/flamegraphs/$1.svg"
  mkdir -p "$ROOT/bench/flamegraphs"
  perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf > "${PROFILE_DIR:-$WORK}/$1.folded"
  inferno-flamegraph --minwidth 1 --title "tollgate, $1 ($(git -C "$ROOT" rev-parse --short HEAD))" \
    < "${PROFILE_DIR:-$WORK}/$1.folded" > "$out"
  echo "flamegraph: $out" >&2
}

# wrk through a proxy: absolute-form targets, and the caller's Proxy-Authorization.
cat > "$WORK/proxy.lua" <<'LUA'
wrk.path = os.getenv("TARGET")
local host = wrk.path:match("^https?://([^/]+)")
if host then wrk.headers["Host"] = host end
local auth = os.getenv("PROXY_AUTH")
if auth and auth ~= "" then wrk.headers["Proxy-Authorization"] = auth end
if os.getenv("CLOSE") == "1" then wrk.headers["Connection"] = "close" end
LUA
# wrk at a fixed rate: each connection waits GAP_MS after each response (wrk takes whole
# milliseconds, so the fraction is dithered: floor or ceiling, in proportion).
cat > "$WORK/paced.lua" <<'LUA'
dofile(os.getenv("WORK") .. "/proxy.lua")
local gap = tonumber(os.getenv("GAP_MS"))
local low, frac = math.floor(gap), gap - math.floor(gap)
function delay() if math.random() < frac then return low + 1 end return low end
LUA
# Every row of a part is run once per round, ROUNDS rounds interleaved (so that a slower
# moment of the machine hits every row alike); a row reports its median round.
# run_wrk NAME URL PROXY_AUTH TARGET [SCRIPT]: one round of a row, output kept.
run_wrk() {
  local name=$1 url=$2 auth=$3 target=$4 script=${5:-$WORK/proxy.lua}
  profile_start "$name"
  WORK=$WORK TARGET="$target" PROXY_AUTH="$auth" wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
    -s "$script" "$url" > "$WORK/runs/$name.$ROUND"
  profile_stop "$name"
}
# run_lg NAME MODE URL: one round of a row driven by examples/loadgen.rs.
run_lg() {
  profile_start "$1"
  "$BIN/examples/loadgen" --proxy "127.0.0.1:$TG" --auth "$TOKEN" --mode "$2" \
    --ca "$WORK/tollgate-ca.pem" --conns "$CONNS" --duration "$DURATION" "$3" > "$WORK/runs/$1.$ROUND" \
    2> >(sort | uniq -c | sed "s/^/$1 round $ROUND: /" >&2)
  profile_stop "$1"
}
# rows NAME...: the median round of each row as a table row (with every round's rate); the
# median rate goes to R[NAME], its p99 to R[NAME.p99].
rows() {
  local name f rates
  for name in "$@"; do
    rates=$(for f in "$WORK/runs/$name".*; do awk '/Requests\/sec/ {print $2}' "$f"; done | sort -n)
    local med; med=$(awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}' <<<"$rates")
    for f in "$WORK/runs/$name".*; do
      if [ "$(awk '/Requests\/sec/ {print $2}' "$f")" = "$med" ]; then
        wrk_report "$name" < "$f" | sed "s/ |\$/ | $(tr '\n' ' ' <<<"$rates" | sed 's/ $//') |/"
        R[$name]=$med
        R[$name.p99]=$(awk '$1=="99%" {print $2}' "$f")
        break
      fi
    done
  done
}
rounds() { # FUNCTION: runs it ROUNDS times (ROUND = 1..ROUNDS)
  for ROUND in $(seq 1 "$ROUNDS"); do "$1"; done
}
mkdir -p "$WORK/runs"
# ms 1.30ms|650.00us|1.02s -> milliseconds
ms() { awk -v t="$1" 'BEGIN { v = t + 0; if (t ~ /us$/) v /= 1000; else if (t ~ /[0-9]s$/) v *= 1000; print v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
TARGETS=()
target() { # label value op limit
  local ok; ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { print ((op == ">=" && v >= l) || (op == "<=" && v <= l)) ? "met" : "NOT met" }')
  TARGETS+=("| $1 | $2 | $3 $4 | $ok |")
}
header() {
  echo; echo "### $1"; echo
  echo "| path | requests/s (median of $ROUNDS) | p50 | p99 | errors | each round |"
  echo "|---|---|---|---|---|---|"
}
ORIGIN="http://127.0.0.1:$UP/1k"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo ' (with local changes)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNS -d$DURATION"

# Warm-up: every server answers for 2 s first (first-connection costs, allocator growth).
for args in "http://127.0.0.1:$UP /1k" "http://127.0.0.1:$RP /1k" "http://127.0.0.1:$SQ $ORIGIN" \
  "http://127.0.0.1:$TG $ORIGIN"; do
  set -- $args
  WORK=$WORK TARGET=$2 PROXY_AUTH="$TOKEN" wrk -t1 -c"$CONNS" -d2s -s "$WORK/proxy.lua" "$1" >/dev/null
done

for part in $PARTS; do
  case $part in
  plain)
    header "Plain forward, 1 KiB, keep-alive"
    plain() {
      run_wrk direct "http://127.0.0.1:$UP" "" /1k
      run_wrk nginx-rp "http://127.0.0.1:$RP" "" /1k
      run_wrk squid "http://127.0.0.1:$SQ" "" "$ORIGIN"
      run_wrk tollgate "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN"
    }
    rounds plain
    rows direct nginx-rp squid tollgate
    target "plain keep-alive: tollgate / nginx RP" "$(ratio "${R[tollgate]}" "${R[nginx-rp]}")" ">=" 0.85
    target "plain keep-alive: tollgate / Squid" "$(ratio "${R[tollgate]}" "${R[squid]}")" ">=" 4
    ;;
  close)
    header "Plain forward, new connection per request (Connection: close)"
    close() {
      export CLOSE=1
      run_wrk direct-close "http://127.0.0.1:$UP" "" /1k
      run_wrk nginx-rp-close "http://127.0.0.1:$RP" "" /1k
      run_wrk tollgate-close "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN"
      unset CLOSE
    }
    rounds close
    rows direct-close nginx-rp-close tollgate-close
    target "Connection: close: tollgate / nginx RP" "$(ratio "${R[tollgate-close]}" "${R[nginx-rp-close]}")" ">=" 0.8
    ;;
  inject)
    header "Token injection (cached token) against plain forward, same tollgate"
    inject() {
      run_wrk tollgate-plain "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN"
      run_wrk tollgate-inject "http://127.0.0.1:$TG" "$TOKEN" "http://localhost:$UP/1k"
    }
    rounds inject
    rows tollgate-plain tollgate-inject
    target "injection / plain" "$(ratio "${R[tollgate-inject]}" "${R[tollgate-plain]}")" ">=" 0.95
    ;;
  tunnel)
    header "Intercepted tunnel, inner requests (examples/loadgen.rs for all three rows)"
    tunnel() {
      run_lg loadgen-plain forward "$ORIGIN"
      run_lg intercepted-h1 h1 "https://127.0.0.1:$UPS/1k"
      run_lg intercepted-h2 h2 "https://127.0.0.1:$UPS/1k"
    }
    rounds tunnel
    rows loadgen-plain intercepted-h1 intercepted-h2
    target "intercepted HTTP/1.1 / plain" "$(ratio "${R[intercepted-h1]}" "${R[loadgen-plain]}")" ">=" 0.8
    target "intercepted HTTP/2 / plain" "$(ratio "${R[intercepted-h2]}" "${R[loadgen-plain]}")" ">=" 0.8
    ;;
  bulk|agent)
    # curl downloads of $BULK, best of 3; bytes/s from curl's own count.
    dl() { # name curl-args...
      local name=$1 best=0 s; shift
      for _ in 1 2 3; do
        s=$(curl -s -o /dev/null -w '%{speed_download}' "$@")
        best=$(awk -v a="$s" -v b="$best" 'BEGIN { print (a > b) ? a : b }')
      done
      R[$name]=$(awk -v b="$best" 'BEGIN { printf "%.0f", b / 1048576 }')
      echo "| $name | ${R[$name]} MiB/s |"
    }
    echo; echo "### Bulk download of $BULK (curl, best of 3)"; echo; echo "| path | throughput |"; echo "|---|---|"
    if [ "$part" = bulk ]; then
      dl direct-bulk "http://127.0.0.1:$UP/big"
      profile_start blind-tunnel
      dl blind-tunnel -p -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $TOKEN" "http://127.0.0.1:$UP/big"
      profile_stop blind-tunnel
      target "blind tunnel bulk / direct" "$(ratio "${R[blind-tunnel]}" "${R[direct-bulk]}")" ">=" 0.8
    else
      dl tollgate-direct-route -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $TOKEN" "http://127.0.0.1:$UP/big"
      profile_start tollgate-agent-route
      dl tollgate-agent-route -x "http://127.0.0.1:$TG" --proxy-header "Proxy-Authorization: $AGENT" "http://127.0.0.1:$UP/big"
      profile_stop tollgate-agent-route
      header "Agent route against direct route, 1 KiB requests"
      agent() {
        run_wrk direct-route "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN"
        run_wrk agent-route "http://127.0.0.1:$TG" "$AGENT" "$ORIGIN"
      }
      rounds agent
      rows direct-route agent-route
      target "agent route plain http bytes/s / direct route" "$(ratio "${R[tollgate-agent-route]}" "${R[tollgate-direct-route]}")" ">=" 0.6
      target "agent route plain http requests/s / direct route" "$(ratio "${R[agent-route]}" "${R[direct-route]}")" ">=" 0.6
    fi
    ;;
  idle)
    echo; echo "### $IDLE idle client connections (each carried one request, then kept open)"; echo
    python3 "$ROOT/bench/idle_clients.py" "127.0.0.1:$TG" "$ORIGIN" "$TOKEN" "$IDLE" "$TG_PID" > "$WORK/idle.out"
    cat "$WORK/idle.out"
    after=$(awk '/^rss_kib/ {print $2}' "$WORK/idle.out")
    target "RSS with $IDLE idle client connections (MB)" "$(awk -v a="$after" 'BEGIN { printf "%.1f", a * 1024 / 1e6 }')" "<=" 100
    ;;
  p99)
    # Both at the same offered rate, half of tollgate's peak (the 'plain' part's median, or
    # measured here). wrk paces each connection with a wait after each response; a 3 s
    # calibration run per server measures the response time to subtract from that wait.
    [ -n "${R[tollgate]:-}" ] || { ROUND=peak run_wrk tollgate "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN"; rows tollgate >/dev/null; }
    RATE=$(awk -v r="${R[tollgate]}" 'BEGIN { printf "%d", r / 2 }')
    header "p99 at $RATE requests/s, half of tollgate's peak (the same offered rate for both)"
    gap() { # url auth target -> GAP_MS for RATE (two 3 s calibration passes)
      local g a pass
      g=$(awk -v c="$CONNS" -v r="$RATE" 'BEGIN { printf "%.3f", c * 1000 / r }')
      for pass in 1 2; do
        a=$(GAP_MS=$g WORK=$WORK TARGET="$3" PROXY_AUTH="$2" wrk -t1 -c"$CONNS" -d3s \
          -s "$WORK/paced.lua" "$1" | awk '/Requests\/sec/ {print $2}')
        g=$(awk -v c="$CONNS" -v r="$RATE" -v g="$g" -v a="$a" \
          'BEGIN { l = c * 1000 / a - g; g2 = c * 1000 / r - l; printf "%.3f", (g2 > 0) ? g2 : 0 }')
      done
      echo "$g"
    }
    GAP_RP=$(gap "http://127.0.0.1:$RP" "" /1k)
    GAP_TG=$(gap "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN")
    half() {
      export GAP_MS=$GAP_RP
      run_wrk nginx-rp-half "http://127.0.0.1:$RP" "" /1k "$WORK/paced.lua"
      export GAP_MS=$GAP_TG
      run_wrk tollgate-half "http://127.0.0.1:$TG" "$TOKEN" "$ORIGIN" "$WORK/paced.lua"
    }
    rounds half
    rows nginx-rp-half tollgate-half
    target "p99 at half peak: tollgate / nginx RP" "$(ratio "$(ms "${R[tollgate-half.p99]}")" "$(ms "${R[nginx-rp-half.p99]}")")" "<=" 2
    ;;
  hold)
    # Everything stays up for manual measurement (perf, strace) until HOLD seconds pass.
    printf 'hold: tollgate pid %s proxy 127.0.0.1:%s web %s; nginx %s, nginx RP %s, squid %s\n' \
      "$TG_PID" "$TG" "$TW" "$UP" "$RP" "$SQ"
    printf 'export TG=%s UP=%s RP=%s SQ=%s TG_PID=%s TOKEN="%s" AGENT="%s" W=%s\n' \
      "$TG" "$UP" "$RP" "$SQ" "$TG_PID" "$TOKEN" "$AGENT" "$WORK" > "${HOLD_ENV:-/dev/stdout}"
    sleep "${HOLD:-600}"
    ;;
  esac
done

echo; echo "### Targets"; echo; echo "| target | measured | wanted | |"; echo "|---|---|---|---|"
printf '%s\n' "${TARGETS[@]}"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "access log lines written by tollgate: $(wc -l < "$WORK/tollgate.log")"
