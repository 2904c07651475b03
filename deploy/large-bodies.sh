#!/usr/bin/env bash
# Peak memory with large bodies: nginx serves a 4,000,000-byte file as the
# upstream, and oha downloads it N times through the gateway over C
# connections (`auth: none`, one worker; the gateway on core 1, oha on
# core 0). Prints oha's rate, the gateway's peak RSS (`VmHWM`) and the
# CPU it used for the whole run. Bounded by the request count; every
# process is stopped by its PID. Needs oha and nginx.
#
#   deploy/large-bodies.sh [BIN=target/release/scopegate] [N=1024] [C=256]
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/release/scopegate}
N=${2:-1024}
C=${3:-256}
UP_PORT=${UP_PORT:-18380}
GW_PORT=${GW_PORT:-18381}
WORK=target/large-bodies
mkdir -p "$WORK/nginx/logs" "$WORK/www"
for tool in oha nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "needs $tool" >&2; exit 2; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -s "$WORK/www/big.bin" ] || head -c 4000000 /dev/urandom > "$WORK/www/big.bin"

cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $PWD/$WORK/nginx/nginx.pid;
error_log $PWD/$WORK/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT;
    root $PWD/$WORK/www;
    location / { }
  }
}
CONF
cat > "$WORK/gateway.yaml" <<YAML
listen: "127.0.0.1:$GW_PORT"
workers: 1
upstream:
  url: "http://127.0.0.1:$UP_PORT"
routes:
  - path: /big.bin
    auth: none
YAML

"$NGINX" -c "$PWD/$WORK/nginx/nginx.conf" -e "$PWD/$WORK/nginx/logs/error.log" &
NGINX_PID=$!
RUST_LOG=warn taskset -c 1 "$BIN" run -c "$WORK/gateway.yaml" >/dev/null 2>"$WORK/gateway.log" &
GW_PID=$!
trap 'kill "$GW_PID" "$NGINX_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/big.bin" && break
  sleep 0.1
done
taskset -c 0 oha -n "$N" -c "$C" --no-tui "http://127.0.0.1:$GW_PORT/big.bin" >"$WORK/oha.txt" 2>&1
grep -q "\[200\] $N responses" "$WORK/oha.txt" || { echo "not every answer was 200: $WORK/oha.txt" >&2; exit 1; }
rate=$(awk '/Requests\/sec/ {print $2}' "$WORK/oha.txt")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$GW_PID/status")
ticks=$(awk '{print $14 + $15}' "/proc/$GW_PID/stat")
hz=$(getconf CLK_TCK)
echo "requests/s: $rate"
echo "peak RSS: $hwm KiB ($(awk -v k="$hwm" 'BEGIN {printf "%.1f", k / 1024}') MiB)"
echo "gateway CPU: $(awk -v t="$ticks" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}') s for $N responses"
