#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable to
# about ±100 instructions where wall-clock figures drift ±10% on a small
# shared machine. The A/B check for changes on the request path.
#
#   deploy/callgrind.sh [BIN=target/release/scopegate] [N1=5000] [N2=15000]
#   AUTH=rs256 deploy/callgrind.sh ...   every request verifies an RS256
#                                       token (the token cache is off)
#   AUTH=cached deploy/callgrind.sh ...  one RS256 token, verified once and
#                                       then found in the token cache
#   CONNS=64 deploy/callgrind.sh ...     over 64 connections (default 8)
#   CACHE_SIM=1 deploy/callgrind.sh ...  cachegrind with its cache and branch
#                                       simulation instead: instructions,
#                                       I1 and D1 misses, branches and
#                                       mispredictions, each per request
#   deploy/callgrind.sh nginx ...        the baseline in the same units:
#                                       nginx as a plain proxy (one
#                                       process, keep-alive upstream
#                                       connections) in the gateway's place,
#                                       sent the same requests (with AUTH,
#                                       the same header, which it forwards)
#
# Starts nginx (one worker, a fixed 3-byte answer) as the upstream and the
# gateway under `valgrind --tool=callgrind` with one `auth: none` route,
# sends N1 requests with oha over CONNS connections, then does the same again
# with N2, and prints (I(N2) - I(N1)) / (N2 - N1): the gateway's user-space
# instructions per request, start-up and shutdown cancelled out. Every
# process is stopped by its PID. Needs valgrind, oha and nginx.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/release/scopegate}
N1=${2:-5000}
N2=${3:-15000}
CONNS=${CONNS:-8}
CACHE_SIM=${CACHE_SIM:-0}
if [ "$CACHE_SIM" = 1 ]; then
  VALGRIND=(valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes)
  OUT_FLAG=--cachegrind-out-file
else
  VALGRIND=(valgrind --tool=callgrind)
  OUT_FLAG=--callgrind-out-file
fi
UP_PORT=${UP_PORT:-18180}
GW_PORT=${GW_PORT:-18181}
WORK=target/callgrind
command -v valgrind >/dev/null 2>&1 || { echo "needs valgrind" >&2; exit 2; }
MINT=$BIN
[ "$BIN" = nginx ] && MINT=target/release/scopegate
# shellcheck source=deploy/hop-setup.sh
. deploy/hop-setup.sh
"$NGINX" -c "$PWD/$WORK/nginx/nginx.conf" -e "$PWD/$WORK/nginx/logs/error.log" &
NGINX_PID=$!
GW_PID=
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
  kill "$NGINX_PID" 2>/dev/null || true
}
trap cleanup EXIT

# One callgrind run serving N requests; prints its instruction total.
count() {
  local n=$1 out="$WORK/callgrind.out.$1"
  if [ "$BIN" = nginx ]; then
    "${VALGRIND[@]}" "$OUT_FLAG=$out" \
      "$NGINX" -c "$PWD/$WORK/proxy/nginx.conf" -e "$PWD/$WORK/proxy/logs/error.log" \
      >/dev/null 2>"$WORK/valgrind.$n.log" &
  else
    RUST_LOG=warn "${VALGRIND[@]}" "$OUT_FLAG=$out" \
      "$BIN" run -c "$WORK/gateway.yaml" >/dev/null 2>"$WORK/valgrind.$n.log" &
  fi
  GW_PID=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "${HEADER[@]}" "http://127.0.0.1:$GW_PORT/api/public" && break
    sleep 0.2
  done
  oha -n "$n" -c "$CONNS" --no-tui "${HEADER[@]}" "http://127.0.0.1:$GW_PORT/api/public" >"$WORK/oha.$n.txt" 2>&1
  grep -q "\[200\] $n responses" "$WORK/oha.$n.txt" || { echo "not every answer was 200: $WORK/oha.$n.txt" >&2; exit 1; }
  kill -TERM "$GW_PID"
  wait "$GW_PID" || true
  GW_PID=
  # Every event's total (callgrind counts one, instructions).
  awk '/^summary:/ {$1 = ""; print}' "$out"
}

read -r -a E1 <<<"$(count "$N1")"
read -r -a E2 <<<"$(count "$N2")"
if [ "$CACHE_SIM" = 1 ]; then
  names=("instructions" "I1 misses" "LL instruction misses" "data reads" "D1 read misses"
    "LL read misses" "data writes" "D1 write misses" "LL write misses"
    "conditional branches" "mispredicted" "indirect branches" "mispredicted indirect")
  for k in "${!names[@]}"; do
    echo "${names[$k]} per request: $(( (E2[k] - E1[k]) / (N2 - N1) ))"
  done
else
  echo "instructions: ${E1[0]} for $N1 requests, ${E2[0]} for $N2"
  echo "per request: $(( (E2[0] - E1[0]) / (N2 - N1) ))"
fi
