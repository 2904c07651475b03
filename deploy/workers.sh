#!/usr/bin/env bash
# Scaling past one event loop: CPU per request and throughput of the
# gateway with `workers: 1` and `workers: 2` (`auth: none`, the hop alone),
# beside nginx as a plain reverse proxy with one and two worker processes,
# in interleaved rounds. oha is pinned to core 0 and the upstream (nginx
# answering `ok`) to core 1; the proxy under test is not pinned, so that
# its second worker can run on either core. CPU is the proxy's user +
# system time over the run (all its threads or worker processes), from
# /proc, and each of the two. Bounded by the request count; every
# process is stopped by its PID. Needs oha, nginx and openssl (and
# redis-server for AUTH=quota).
#
#   deploy/workers.sh [BIN=target/release/scopegate] [ROUNDS=2] [N=100000] [C=64]
#   AUTH=cached deploy/workers.sh ...  one RS256 token, verified once and
#                                      then found in the shared cache
#   AUTH=rs256 deploy/workers.sh ...   the cache off: every request
#                                      verifies the token's signature
#   AUTH=quota deploy/workers.sh ...   no token, but every request takes
#                                      from a Redis quota that never limits
#                                      (redis-server on core 1)
# (nginx stays a plain proxy in every mode: the reference for the hop.)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/release/scopegate}
ROUNDS=${2:-2}
N=${3:-100000}
C=${4:-64}
UP_PORT=${UP_PORT:-18480}
PROXY_PORT=${PROXY_PORT:-18481}
REDIS_PORT=${REDIS_PORT:-18482}
WORK=target/workers
mkdir -p "$WORK/logs" "$WORK/tmp"
for tool in oha nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "needs $tool" >&2; exit 2; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TICK=$(getconf CLK_TCK)
[ -f "$WORK/key.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
AUTH=${AUTH:-none}
HEADER=()
CACHE=1000
QUOTAS=
case "$AUTH" in
  none) ROUTE='auth: none' ;;
  quota)
    ROUTE='auth: none
    rate_limit: never'
    QUOTAS="rate_limits:
  store: redis
  redis:
    url: \"redis://127.0.0.1:$REDIS_PORT/0\"
    timeout: 50ms
    on_error: deny
  policies:
    never:
      key: ip
      rate: 1000000/s" ;;
  cached | rs256)
    TOKEN=$("$BIN" token --key "$WORK/key.pem" --iss https://workers.local/ --aud https://api.workers --sub w --scope read:messages --ttl 1h)
    HEADER=(-H "Authorization: Bearer $TOKEN")
    ROUTE='scopes: [read:messages]'
    [ "$AUTH" = rs256 ] && CACHE=0 ;;
  *) echo "AUTH is none, cached, rs256 or quota" >&2; exit 2 ;;
esac

cat > "$WORK/upstream.conf" <<CONF
worker_processes 1;
daemon off;
pid $PWD/$WORK/upstream.pid;
error_log $PWD/$WORK/logs/upstream.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $PWD/$WORK/tmp;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { return 200 "ok\n"; }
  }
}
CONF
proxy_conf() {
  cat <<CONF
worker_processes $1;
daemon off;
pid $PWD/$WORK/proxy.pid;
error_log $PWD/$WORK/logs/proxy.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $PWD/$WORK/tmp;
  proxy_temp_path $PWD/$WORK/tmp;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$PROXY_PORT backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://up; }
  }
}
CONF
}
gateway_conf() {
  cat <<YAML
listen: "127.0.0.1:$PROXY_PORT"
workers: $1
upstream:
  url: "http://127.0.0.1:$UP_PORT"
issuers:
  - issuer: https://workers.local/
    audiences: [https://api.workers]
    public_key_file: pub.pem
    algorithms: [RS256]
tokens:
  cache_size: $CACHE
$QUOTAS
routes:
  - path: /api/public
    $ROUTE
YAML
}

taskset -c 1 "$NGINX" -c "$PWD/$WORK/upstream.conf" -e "$PWD/$WORK/logs/upstream.log" &
UP_PID=$!
REDIS_PID=
if [ "$AUTH" = quota ]; then
  taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  REDIS_PID=$!
fi
PROXY_PID=
trap 'kill $PROXY_PID $REDIS_PID "$UP_PID" 2>/dev/null || true' EXIT

# CPU ticks, user then system, of a process and its children (nginx's
# workers), or of every thread of one process (the gateway's
# /proc/PID/stat counts them all).
ticks() {
  local user system u s
  read -r user system < <(awk '{print $14, $15}' "/proc/$1/stat")
  for child in $(pgrep -P "$1" || true); do
    read -r u s < <(awk '{print $14, $15}' "/proc/$child/stat")
    user=$((user + u))
    system=$((system + s))
  done
  echo "$user $system"
}

measure() { # NAME WORKERS
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "${HEADER[@]}" "http://127.0.0.1:$PROXY_PORT/api/public" && break
    sleep 0.1
  done
  taskset -c 0 oha -n 2000 -c "$C" --no-tui "${HEADER[@]}" "http://127.0.0.1:$PROXY_PORT/api/public" >/dev/null 2>&1
  local u0 s0 u1 s1
  read -r u0 s0 < <(ticks "$PROXY_PID")
  taskset -c 0 oha -n "$N" -c "$C" --no-tui "${HEADER[@]}" "http://127.0.0.1:$PROXY_PORT/api/public" >"$WORK/oha.txt" 2>&1
  read -r u1 s1 < <(ticks "$PROXY_PID")
  kill "$PROXY_PID"
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=
  local rps ok
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$WORK/oha.txt")
  ok=$(awk '/\[200\]/ {print $2}' "$WORK/oha.txt")
  awk -v name="$1" -v w="$2" -v rps="$rps" -v ok="${ok:-0}" -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v n="$N" -v tick="$TICK" \
    'BEGIN { f = 1e6 / tick / n; printf "%-10s workers=%s  req/s=%s  200s=%s  CPU µs/req=%.1f (user %.1f, system %.1f)\n", name, w, rps, ok, (u + s) * f, u * f, s * f }'
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  for workers in 1 2; do
    proxy_conf "$workers" >"$WORK/proxy.conf"
    "$NGINX" -c "$PWD/$WORK/proxy.conf" -e "$PWD/$WORK/logs/proxy.log" &
    PROXY_PID=$!
    measure nginx "$workers"
    gateway_conf "$workers" >"$WORK/gateway.yaml"
    RUST_LOG=warn "$BIN" run -c "$WORK/gateway.yaml" >/dev/null 2>"$WORK/logs/gateway.log" &
    PROXY_PID=$!
    measure scopegate "$workers"
  done
done
