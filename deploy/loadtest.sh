#!/usr/bin/env bash
# Load test with oha, everything on 127.0.0.1, every run bounded in time.
#
#   deploy/loadtest.sh [SECONDS_PER_RUN=10] [ROUNDS=3] [CONNECTIONS=64]
#
# Scenarios, interleaved round by round (A B C D, A B C D, ...):
#   A  the upstream directly (nginx, one worker, small fixed body): the ceiling
#   B  scopegate, /api/private-scoped, one valid RS256 token (cache hits)
#   C  scopegate, /api/private-scoped, 100,000 distinct valid tokens in the
#      query string (oha --urls-from-file); the gateway's cache holds 1,000,
#      so nearly every request verifies a signature
#   D  scopegate, /api/public (auth: none): the cost of the hop alone
#   E  scopegate, /api/quota (auth: none) with a Redis-backed quota that
#      never limits: D plus one Redis round trip per request
#   F  scopegate, /api/opaque, one opaque token introspected by a real
#      provider (oidc-provider, tests/idp) once, then cache hits: beside B
# oha runs on core 0; the gateway (workers: 1), nginx and Redis on core 1.
# Prints req/s (median of rounds), p50/p99, success rate, ratio to A, the
# gateway's CPU time per request and its peak RSS. Installs oha
# (`cargo install oha --locked`, ~9 minutes once), nginx and redis-server
# if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-64}
POOL=${POOL:-100000}
UP_PORT=${UP_PORT:-19080}
REDIS_PORT=${REDIS_PORT:-19379}
IDP_PORT=${IDP_PORT:-19555}
GW_PORT=${GW_PORT:-19090}
WORK=target/loadtest
mkdir -p "$WORK/results"

command -v oha >/dev/null 2>&1 || cargo install oha --locked
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v redis-server >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
# EVENTS_PER_BUSY_TURN: the gateway's `events_per_busy_turn` (its default if unset).
# SCOPEGATE_BIN: another build to measure (an A/B against a baseline
# commit built elsewhere); by default this tree's release build.
if [ -n "${SCOPEGATE_BIN:-}" ]; then
  SG=$SCOPEGATE_BIN
else
  cargo build --release --locked --bin scopegate
  SG=target/release/scopegate
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The upstream: nginx, one worker, a fixed body.
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $PWD/$WORK/nginx/nginx.pid;
error_log $PWD/$WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $PWD/$WORK/nginx/body;
  server {
    listen 127.0.0.1:$UP_PORT reuseport;
    location / { return 200 "ok\n"; }
  }
}
NGINX
taskset -c 1 "$NGINX" -p "$PWD/$WORK/nginx" -e "$PWD/$WORK/nginx/error.log" -c "$PWD/$WORK/nginx/nginx.conf" &
pids+=($!)
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
# A real introspecting provider (scenario F).
[ -d tests/idp/node_modules/oidc-provider ] || (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error)
CLIENTS='[{"client_id":"app","client_secret":"app-secret-0123456789abcdef","token_endpoint_auth_method":"client_secret_basic","scope":"read:users"},{"client_id":"gw","client_secret":"gw-secret-0123456789abcdef","token_endpoint_auth_method":"client_secret_basic"}]'
IDP_PORT=$IDP_PORT IDP_KEYS="$PWD/$WORK/idp-keys.json" IDP_CLIENTS="$CLIENTS" taskset -c 1 node tests/idp/server.mjs >/dev/null 2>&1 &
pids+=($!)
printf 'gw-secret-0123456789abcdef' > "$WORK/gw-secret.txt"

# A development key, tokens, and the gateway's config.
[ -f "$WORK/key.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem" 2>/dev/null
ISS=https://loadtest.scopegate.local/
AUD=https://api.loadtest
mint() { "$SG" token --key "$WORK/key.pem" --iss "$ISS" --aud "$AUD" --sub loadtest --ttl 3h "$@"; }
TOKEN=$(mint --scope read:messages)
# The pool is reused while its tokens are valid for the next two hours.
if [ ! -s "$WORK/urls.txt" ] || [ -n "$(find "$WORK/urls.txt" -mmin +60)" ] || [ "$(wc -l < "$WORK/urls.txt")" -ne "$POOL" ]; then
  echo "minting $POOL distinct tokens..."
  mint --scope read:messages --count "$POOL" | sed "s|^|http://127.0.0.1:$GW_PORT/api/private-scoped?access_token=|" > "$WORK/urls.txt"
fi
cat > "$WORK/gateway.yaml" <<YAML
listen: "127.0.0.1:$GW_PORT"
workers: 1
${EVENTS_PER_BUSY_TURN:+events_per_busy_turn: $EVENTS_PER_BUSY_TURN}
upstream:
  url: "http://127.0.0.1:$UP_PORT"
issuers:
  - issuer: "$ISS"
    audiences: ["$AUD"]
    public_key_file: pub.pem
    algorithms: [RS256]
  - issuer: "http://127.0.0.1:$IDP_PORT"
    audiences: ["$AUD"]
    introspection:
      client_id: gw
      client_secret_file: gw-secret.txt
      require_aud: false
      cache_ttl: 10m
tokens:
  from: [header, "query:access_token"]
  cache_size: 1000
rate_limits:
  store: redis
  redis:
    url: "redis://127.0.0.1:$REDIS_PORT/0"
    timeout: 50ms
    on_error: deny
  policies:
    never:
      key: ip
      rate: 1000000/s
routes:
  - path: /api/quota
    methods: [GET]
    auth: none
    rate_limit: never
  - path: /api/opaque
    methods: [GET]
    scopes: [read:users]
  - path: /api/public
    methods: [GET]
    auth: none
  - path: /api/private
  - path: /api/private-scoped
    methods: [GET]
    scopes: [read:messages]
YAML
# Access lines off: the peers' access logs are off too.
RUST_LOG=${RUST_LOG:-warn} taskset -c 1 "$SG" run -c "$WORK/gateway.yaml" &
GW_PID=$!
pids+=("$GW_PID")
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/api/public" && curl -s -o /dev/null "http://127.0.0.1:$UP_PORT/" && break
  sleep 0.1
done

for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$IDP_PORT/_stats" && break; sleep 0.1; done
OPAQUE=$(curl -s -u app:app-secret-0123456789abcdef -d grant_type=client_credentials -d scope=read:users "http://127.0.0.1:$IDP_PORT/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# Correctness first: the runs below mean nothing if these fail.
check() { local want=$1; shift; local got; got=$(curl -s -o /dev/null -w '%{http_code}' "$@"); [ "$got" = "$want" ] || { echo "check failed: $* -> $got, want $want"; exit 1; }; }
check 401 "http://127.0.0.1:$GW_PORT/api/private-scoped"
check 200 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW_PORT/api/private-scoped"
check 403 -H "Authorization: Bearer $(mint --scope profile)" "http://127.0.0.1:$GW_PORT/api/private-scoped"
check 200 "$(head -n 1 "$WORK/urls.txt")"
check 200 "http://127.0.0.1:$GW_PORT/api/public"
check 200 "http://127.0.0.1:$GW_PORT/api/quota"
check 200 -H "Authorization: Bearer $OPAQUE" "http://127.0.0.1:$GW_PORT/api/opaque"
check 401 -H "Authorization: Bearer not-an-active-token-0123" "http://127.0.0.1:$GW_PORT/api/opaque"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$GW_PID/stat"; }
STAMP=$(date +%Y%m%d-%H%M%S)
OUT="$WORK/results/$STAMP"
mkdir -p "$OUT"
run() {
  local name=$1 round=$2; shift 2
  local before after
  before=$(cpu_ticks)
  timeout $((DUR + 30)) taskset -c 0 oha -z "${DUR}s" -c "$CONNS" --no-tui --output-format json "$@" > "$OUT/$name-$round.json"
  after=$(cpu_ticks)
  echo "$((after - before))" > "$OUT/$name-$round.cpu"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS"
  run A "$round" "http://127.0.0.1:$UP_PORT/api/private-scoped"
  run B "$round" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW_PORT/api/private-scoped"
  run C "$round" --urls-from-file "$WORK/urls.txt"
  run D "$round" "http://127.0.0.1:$GW_PORT/api/public"
  run E "$round" "http://127.0.0.1:$GW_PORT/api/quota"
  run F "$round" -H "Authorization: Bearer $OPAQUE" "http://127.0.0.1:$GW_PORT/api/opaque"
done
grep VmHWM "/proc/$GW_PID/status" | awk '{print $2}' > "$OUT/gateway-peak-rss-kib"

python3 - "$OUT" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys, pathlib
out, hz = pathlib.Path(sys.argv[1]), int(sys.argv[2])
names = {"A": "upstream directly (nginx)", "B": "scopegate, one token (cached)",
         "C": "scopegate, 100k distinct tokens", "D": "scopegate, auth: none (hop only)",
         "E": "scopegate, auth: none + Redis quota (never limits)",
         "F": "scopegate, one opaque token (introspected once, cached)"}
rows, base = [], None
for key in "ABCDEF":
    runs = sorted(out.glob(f"{key}-*.json"))
    rps, p50, p99, ok, cpu = [], [], [], [], []
    for f in runs:
        d = json.loads(f.read_text())
        s = d["summary"]; lat = d.get("latencyPercentiles", {})
        codes = d.get("statusCodeDistribution", {})
        total = sum(codes.values()) or 1
        rps.append(s["requestsPerSec"]); ok.append(codes.get("200", 0) / total)
        p50.append((lat.get("p50") or 0) * 1000); p99.append((lat.get("p99") or 0) * 1000)
        ticks = int(f.with_suffix(".cpu").read_text())
        n = total if key != "A" else 0
        if n: cpu.append(ticks / hz / n * 1e6)
    m = statistics.median(rps)
    base = base or m
    rows.append((key, names[key], m, min(rps), max(rps), statistics.median(p50), statistics.median(p99),
                 min(ok) * 100, m / base, statistics.median(cpu) if cpu else None))
rss = int((out / "gateway-peak-rss-kib").read_text()) / 1024
print(f"\n| scenario | req/s (median) | min..max | p50 ms | p99 ms | 200s | vs direct | gateway CPU µs/req |")
print("|---|---|---|---|---|---|---|---|")
for k, n, m, lo, hi, a, b, ok, ratio, cpu in rows:
    cpu_s = f"{cpu:.1f}" if cpu is not None else "–"
    print(f"| {k} {n} | {m:,.0f} | {lo:,.0f}..{hi:,.0f} | {a:.2f} | {b:.2f} | {ok:.2f}% | {ratio:.2f} | {cpu_s} |")
print(f"\ngateway peak RSS: {rss:.1f} MiB; results in {out}")
PY
