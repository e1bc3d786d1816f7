#!/usr/bin/env bash
# A throwaway PostgreSQL for the store tests, from Debian's packages.
#   source .ci/postgres.sh && pg_test_start   # exports TOLLGATE_TEST_POSTGRES
#   pg_test_stop
# initdb refuses to run as root, so the cluster belongs to the `postgres` user (created by
# the package). It listens on 127.0.0.1 only, on a free port, with fsync off (test data).

pg_test_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && echo "$d"
}

pg_test_start() {
  if [ -z "$(pg_test_bin)" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin port
  bin=$(pg_test_bin) || return 1
  PG_TEST_DIR=$(mktemp -d /tmp/tollgate-pg.XXXXXX)
  chown postgres: "$PG_TEST_DIR"
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_TEST_DIR" postgres
  # A port nothing listens on (bash's /dev/tcp connect fails).
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
  done
  runuser -u postgres -- "$bin/initdb" -D "$PG_TEST_DIR/data" -U postgres --auth=trust >/dev/null || return 1
  runuser -u postgres -- "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -c fsync=off -c unix_socket_directories=$PG_TEST_DIR -c max_connections=300" \
    start >/dev/null || { cat "$PG_TEST_DIR/log"; return 1; }
  export PG_TEST_DIR PG_TEST_BIN=$bin
  export TOLLGATE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  echo "postgres: $TOLLGATE_TEST_POSTGRES"
}

pg_test_stop() {
  [ -n "${PG_TEST_DIR:-}" ] || return 0
  runuser -u postgres -- "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m fast stop >/dev/null
  rm -rf "$PG_TEST_DIR"
}
