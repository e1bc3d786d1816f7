#!/usr/bin/env bash
# HTTPS interception figures for BENCHMARKS.md: kept-alive requests/s (intercepted, blind,
# direct), new intercepted connections/s (warm and cold leaf cache), mint cost, and blind
# tunnel bulk throughput against direct for a 1 GiB transfer. Everything is in one process on
# loopback (see benches/intercept.rs); the release (bench) profile is used.
#
#   bash bench/intercept.sh
#   DURATION=20 CONNS=64 NEW_CONNS=16 BULK_MIB=1024 BULK_RUNS=3 bash bench/intercept.sh
#
# Prints the machine, the load average before the run, and a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench intercept 2>/dev/null
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
