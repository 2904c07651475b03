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
for tool in valgrind oha nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "needs $tool" >&2; exit 2; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# One nginx process's config, $WORK/$1/nginx.conf: $2 goes at the top
# level, $3 inside `http`.
nginx_conf() {
  local dir="$WORK/$1"
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
$2
daemon off;
pid $PWD/$dir/nginx.pid;
error_log $PWD/$dir/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $PWD/$dir/tmp;
$3
}
CONF
}

# The upstream: a fixed 3-byte answer.
nginx_conf nginx "" "  server {
    listen 127.0.0.1:$UP_PORT;
    keepalive_requests 1000000;
    location / { return 200 \"ok\\n\"; }
  }"
# The plain-proxy baseline (BIN=nginx): nginx in the gateway's place, one
# process (no master), so that callgrind sees the worker.
nginx_conf proxy "master_process off;" "  upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$GW_PORT;
    keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
[ -f "$WORK/key.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
AUTH=${AUTH:-none}
HEADER=()
CACHE_SIZE=1000
case "$AUTH" in
  none)
    ROUTE='auth: none' ;;
  rs256|cached)
    # rs256, cache off: every request pays for a whole verification, as
    # with every token distinct (HAProxy's jwt_verify verifies every
    # request). cached: the peer benchmark's case, one token reused.
    MINT=$BIN
    [ "$BIN" = nginx ] && MINT=target/release/scopegate
    TOKEN=$("$MINT" token --key "$WORK/key.pem" --iss https://callgrind.local/ --aud https://api.callgrind --sub cg --scope read:messages --ttl 1h)
    HEADER=(-H "Authorization: Bearer $TOKEN")
    ROUTE='scopes: [read:messages]'
    [ "$AUTH" = rs256 ] && CACHE_SIZE=0 ;;
  *) echo "AUTH is none, rs256 or cached" >&2; exit 2 ;;
esac
cat > "$WORK/gateway.yaml" <<YAML
listen: "127.0.0.1:$GW_PORT"
workers: 1
upstream:
  url: "http://127.0.0.1:$UP_PORT"
issuers:
  - issuer: https://callgrind.local/
    audiences: [https://api.callgrind]
    public_key_file: pub.pem
    algorithms: [RS256]
tokens:
  cache_size: $CACHE_SIZE
routes:
  - path: /api/public
    $ROUTE
YAML

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
