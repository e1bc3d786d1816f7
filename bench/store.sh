#!/usr/bin/env bash
# The store under load: injected requests per second and refresh latency with the PostgreSQL
# store against the sled store, in one run. Two tollgate release builds at once (one on sled,
# one on PostgreSQL holding a copy of the same records, made with `tollgate store copy`), one
# nginx upstream serving 1 KiB, one token endpoint; wrk alternates between the two.
#
#   bash bench/store.sh     # PostgreSQL: $TOLLGATE_TEST_POSTGRES, else a throwaway cluster
#                           # from .ci/postgres.sh; installs wrk and nginx (Debian) if missing
#   DURATION=20s CONNS=64 ROUNDS=3 REFRESHES=200 bash bench/store.sh
#
# - cached path: user "wrk" has a fresh token of unknown lifetime, so every request is served
#   from the injector's token cache (the store is read once);
# - refresh path: user "fresh" has a token that is always due (the token endpoint answers
#   expires_in 0), so each of REFRESHES sequential requests refreshes it: on sled the
#   in-process single-flight and a compare-and-swap write; on PostgreSQL also the grant's
#   lease (an UPDATE), the write and its NOTIFY.
#
# Prints Markdown tables ready for BENCHMARKS.md and the postgres/sled ratio of the cached path.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
REFRESHES=${REFRESHES:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/tollgate-store.XXXXXX)
chmod 755 "$WORK"  # nginx workers drop to an unprivileged user
PIDS=()
OWN_PG=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "$OWN_PG" ] && pg_test_stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

. "$(dirname "$0")/lib.sh"
need_packages wrk nginx curl python3

if [ -z "${TOLLGATE_TEST_POSTGRES:-}" ]; then
  # shellcheck source=/dev/null
  source "$ROOT/.ci/postgres.sh"
  pg_test_start >&2
  OWN_PG=1
fi
DB="tg_bench_$$"
psql -q "$TOLLGATE_TEST_POSTGRES" -c "CREATE DATABASE $DB" >&2
PG_URL=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$TOLLGATE_TEST_POSTGRES" "$DB")

UP=$(free_port); TP=$(free_port)
S_PROXY=$(free_port); S_WEB=$(free_port); P_PROXY=$(free_port); P_WEB=$(free_port)

# --- upstream: nginx serving a 1 KiB body (bench/lib.sh) ---
nginx_1k "$UP"

# --- token endpoint: every refresh answers a new token that is due at once ---------------
cat > "$WORK/token.py" <<'PY'
import http.server, json, sys, itertools
n = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        i = next(n)
        body = json.dumps({"access_token": f"at-{i}", "refresh_token": f"rt-{i}",
                           "token_type": "bearer", "expires_in": 0}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with open(sys.argv[2], "w") as f:
            f.write(str(i))
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
echo 0 > "$WORK/refreshes"
python3 "$WORK/token.py" "$TP" "$WORK/refreshes" & PIDS+=($!)

# --- tollgate on sled with the app and two users' tokens; a copy of it on PostgreSQL ------
(cd "$ROOT" && cargo build --release --quiet --bin tollgate --example seed_token)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$WORK/policies"
cat > "$WORK/policies/load.toml" <<CONF
[[policy]]
name = "load"
route = "direct"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32", "::1/128"]
  ports = [$UP, $TP]
  [[policy.allow]]
  hosts = ["localhost"]
  ports = [$UP]
  private = true
CONF
serve() { # name data proxy web [flags...]
  local name=$1 data=$2 proxy=$3 web=$4; shift 4
  "$BIN/tollgate" serve --data "$data" --policies "$WORK/policies" \
    --proxy-listen "127.0.0.1:$proxy" --web-listen "127.0.0.1:$web" --log-format json "$@" \
    >>"$WORK/$name.out" 2>>"$WORK/$name.log" &
  PIDS+=($!)
  wait_port "$proxy"; wait_port "$web"
}
serve sled "$WORK/data" "$S_PROXY" "$S_WEB"
create_app "$S_WEB" "$BIN/tollgate" "$WORK/data" load load "$TP"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
"$BIN/examples/seed_token" "$WORK/data" load api wrk "bench-access-token" >&2
"$BIN/examples/seed_token" "$WORK/data" load api fresh "due-access-token" "rt-0" >&2
"$BIN/tollgate" store copy --data "$WORK/data" --to "$PG_URL" >&2
mkdir -p "$WORK/data-pg"
cp -a "$WORK/data/keys" "$WORK/data/ca" "$WORK/data-pg/"
serve sled "$WORK/data" "$S_PROXY" "$S_WEB"
serve postgres "$WORK/data-pg" "$P_PROXY" "$P_WEB" --store "$PG_URL"

TOKEN=$("$BIN/tollgate" token mint --data "$WORK/data" --org load --user wrk --ttl 1h)
FRESH=$("$BIN/tollgate" token mint --data "$WORK/data" --org load --user fresh --ttl 1h)
# Sanity: both serve the body with the token injected.
for proxy in "$S_PROXY" "$P_PROXY"; do
  body=$(curl -s -x "http://127.0.0.1:$proxy" --proxy-header "Proxy-Authorization: Bearer $TOKEN" "http://localhost:$UP/1k")
  [ "${#body}" = 1024 ] || { echo "tollgate on port $proxy returned: $body" >&2; exit 1; }
done

cat > "$WORK/proxy.lua" <<LUA
wrk.path = os.getenv("TARGET")
wrk.headers["Host"] = os.getenv("HOSTHDR")
wrk.headers["Proxy-Authorization"] = os.getenv("PROXY_AUTH")
LUA
run() { # name proxy-port
  local out
  out=$(TARGET="http://localhost:$UP/1k" HOSTHDR="localhost:$UP" PROXY_AUTH="Bearer $TOKEN" \
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/proxy.lua" "http://127.0.0.1:$2")
  wrk_report "$1" <<<"$out"
}
echo "| store (cached injection) | requests/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
for _ in $(seq 1 "$ROUNDS"); do
  run sled "$S_PROXY"
  run postgres "$P_PROXY"
done
echo
awk '/^sled/ {s+=$NF; ns++} /^postgres/ {p+=$NF; np++} END {printf "postgres/sled = %.2f (mean of %d rounds)\n", (p/np)/(s/ns), np}' "$WORK/rps"
echo

refresh() { # name proxy-port
  local before after n bad
  before=$(cat "$WORK/refreshes")
  for _ in $(seq 1 "$REFRESHES"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -x "http://127.0.0.1:$2" \
      --proxy-header "Proxy-Authorization: Bearer $FRESH" "http://localhost:$UP/1k"
  done > "$WORK/refresh-$1"
  after=$(cat "$WORK/refreshes")
  awk '{printf "%.2f\n", $2 * 1000}' "$WORK/refresh-$1" | sort -n > "$WORK/refresh-$1.ms"
  n=$(wc -l < "$WORK/refresh-$1.ms")
  bad=$(awk '$1 != 200' "$WORK/refresh-$1" | wc -l)
  printf '| %s | %d | %d | %s ms | %s ms | %s ms | %d |\n' "$1" "$n" "$((after - before))" \
    "$(sed -n "$(((n + 1) / 2))p" "$WORK/refresh-$1.ms")" \
    "$(sed -n "$((n * 9 / 10))p" "$WORK/refresh-$1.ms")" \
    "$(tail -n 1 "$WORK/refresh-$1.ms")" "$bad"
}
echo "| store (refresh on every request) | requests | refreshes at the provider | p50 | p90 | max | non-200 |"
echo "|---|---|---|---|---|---|---|"
refresh sled "$S_PROXY"
refresh postgres "$P_PROXY"
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg); wrk -t$THREADS -c$CONNS -d$DURATION"
