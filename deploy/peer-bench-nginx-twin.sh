#!/usr/bin/env bash
# Starts a second copy of the peer benchmark's nginx plain proxy (P1) in
# the gateway's slot, for an A/A run: the same server measured in both
# slots of each round shows what the harness itself adds to a ratio
# (P1 always runs first in a round, right after the CPU probe; GW second).
#   GATEWAY_CMD=$PWD/deploy/peer-bench-nginx-twin.sh PEER_FILTER='P1|GW' \
#     target/peer-bench/run.sh 10 64
#   deploy/peer-pairs.py target/peer-bench/results/*
# The twin serves the same configuration as P1 from its own prefix; only
# the port (BENCH_LISTEN) and the pid file differ. It enforces nothing, so
# the harness's correctness table marks its auth checks FAIL: expected.
set -euo pipefail
: "${BENCH_WORK:?run me from the peer benchmark (GATEWAY_CMD)}"
prefix="$BENCH_WORK/twin"
mkdir -p "$prefix/logs" "$prefix/tmp"
sed -e "s#@WORK@#$BENCH_WORK#g" \
    -e "s#listen 127.0.0.1:18090#listen ${BENCH_LISTEN}#" \
    -e "s#^pid p1.pid;#pid twin.pid;#" \
    "$BENCH_WORK/../conf/p1-nginx.conf" >"$prefix/nginx.conf"
grep -q "listen ${BENCH_LISTEN} " "$prefix/nginx.conf" || {
  echo "P1's listen line was not found in conf/p1-nginx.conf" >&2
  exit 1
}
exec nginx -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" -g 'daemon off;'
