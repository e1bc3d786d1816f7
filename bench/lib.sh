# Shared by the bench scripts (sourced): free ports, waiting for one to open, and the nginx
# upstream serving a 1 KiB body. The caller sets WORK (a scratch directory) and `set -e`.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# nginx_1k PORT: nginx serving $WORK/www/1k on 127.0.0.1 and [::1] (localhost may resolve to
# ::1), keep-alive without limit, no access log.
nginx_1k() {
  mkdir -p "$WORK/www" "$WORK/nginx"
  head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/1k"
  cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$1; listen [::1]:$1; root $WORK/www; }
}
CONF
  nginx -c "$WORK/nginx.conf"
}

# wrk_report NAME < WRK-OUTPUT: wrk's result as a Markdown row (requests/s, p50, p99,
# errors); the rate is also appended to $WORK/rps for the ratios.
wrk_report() {
  local out rps p50 p99 errs
  out=$(cat)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "${errs:-none}"
  echo "$1 $rps" >> "$WORK/rps"
}

# need_packages CMD...: installs the Debian packages of the commands missing (same names),
# without letting their own services start (we run our own instances).
need_packages() {
  local need=() b
  for b in "$@"; do command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || need+=("$b"); done
  [ ${#need[@]} -gt 0 ] || return 0
  echo "installing ${need[*]}" >&2
  apt-get update -qq >&2
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  rm -f /usr/sbin/policy-rc.d
}

# create_app WEB_PORT TOLLGATE DATA ORG POLICY UPSTREAM_PORT: an admin of ORG creates app
# "api" bound to "localhost" (plain http, no TLS origination) with its endpoints on the
# upstream's port, through the admin API of the tollgate serving DATA on WEB_PORT.
create_app() {
  local admin
  admin=$("$2" token mint --data "$3" --org "$4" --user admin --role admin --ttl 1h)
  curl -sf -o /dev/null -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    "http://127.0.0.1:$1/v1/apps" -d @- <<JSON
{"id": "api", "name": "API", "approval_prompt": "ok",
 "authorize_url": "http://127.0.0.1:$6/authorize", "token_url": "http://127.0.0.1:$6/token",
 "client_id": "c", "client_secret": "s", "scopes": [], "egress_policy": "$5",
 "domains": ["localhost"], "upstream_tls": false}
JSON
}

# start_agent TOLLGATE DATA RELAY_PORT WEB_PORT: enrolls agent "bench" and runs it (allowing
# 127.0.0.1/32, log in $WORK/agent.log), its pid in AGENT_PID and PIDS, then waits until both
# of its relay connections are up (read from tollgate's metrics).
start_agent() {
  "$1" agent enroll --data "$2" --id bench > "$WORK/agent.jwt"
  "$1" agent run --relay "https://127.0.0.1:$3" --id bench --credential-file "$WORK/agent.jwt" \
    --ca-file "$2/ca/ca.pem" --allow 127.0.0.1/32 --log-format json 2>"$WORK/agent.log" &
  AGENT_PID=$!
  PIDS+=($AGENT_PID)
  local operator
  operator=$("$1" token mint --data "$2" --org ops --user bench --role operator --ttl 2h)
  for _ in $(seq 1 100); do
    curl -s -H "Authorization: Bearer $operator" "http://127.0.0.1:$4/metrics" \
      | grep -q 'tollgate_agent_connections{agent="bench"} 2' && return 0
    sleep 0.1
  done
  echo "the agent did not connect (see $WORK/agent.log)" >&2
  return 1
}
