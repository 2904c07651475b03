#!/usr/bin/env bash
# The shape of a hop's latency, and what the kernel does around it. For
# each BIN in turn (a scopegate binary, or `nginx` for nginx as a plain
# proxy), ROUNDS times: the upstream (nginx, one worker) and the proxy
# pinned to one core, oha to another, as the peer benchmark pins them.
#
#   deploy/latency-shape.sh [ROUNDS=2] BIN|nginx ...
#   AUTH=cached (default), none or rs256: as in deploy/callgrind.sh
#   CONNS=64  DUR=5s  LOAD_CPU=0  SERVER_CPU=1
#
# Prints, per run: req/s; the proxy's CPU µs per request; the upstream's
# wake-ups per request (its voluntary context switches) and the proxy's
# preemptions per request (its involuntary ones), from /proc; p50, p90,
# p95 and p99; the share of requests in each 0.1 ms of latency (oha
# records every request with --db-url); and when the slowest 5% finish:
# how many of them together, in a few milliseconds, and whether in step
# with the scheduler's tick (CONFIG_HZ, when the kernel's config is
# readable). Bounded: DUR per run, after 2 s
# of warm-up. Every process is stopped by its PID. Needs oha, nginx,
# taskset, curl and python3.
#
# TRACE=1 also records, for 0.4 s in the middle of each run, the syscalls
# and context switches of oha, the proxy and the upstream (`perf record`,
# as root), and splits each request's latency into the time it sat in the
# proxy's socket, the time in the proxy and upstream, and the time until
# oha read the answer (deploy/hop-trace.py). Tracing slows the hop: read
# that run's figures against each other, not against untraced runs.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=2
if [[ ${1:-} =~ ^[0-9]+$ ]]; then ROUNDS=$1; shift; fi
[ $# -gt 0 ] || { echo "usage: deploy/latency-shape.sh [ROUNDS] BIN|nginx ..." >&2; exit 2; }
CONNS=${CONNS:-64}
DUR=${DUR:-5s}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
AUTH=${AUTH:-cached}
UP_PORT=${UP_PORT:-18190}
GW_PORT=${GW_PORT:-18191}
WORK=target/latency-shape
TRACE=${TRACE:-0}
TOOLS="taskset curl python3"
if [ "$TRACE" = 1 ]; then
  TOOLS="$TOOLS perf"
  # The trace starts 1.5 s into the run and lasts 0.4 s.
  [[ $DUR =~ ^[0-9]+s$ && ${DUR%s} -ge 3 ]] || { echo "TRACE=1 needs DUR of 3s or more" >&2; exit 2; }
fi
for tool in $TOOLS; do
  command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool" >&2; exit 2; }
done
# The token is minted by the first scopegate among the binaries.
MINT=target/release/scopegate
for bin in "$@"; do
  if [ "$bin" != nginx ]; then MINT=$bin; break; fi
done
# shellcheck source=deploy/hop-setup.sh
. deploy/hop-setup.sh
TICKS=$(getconf CLK_TCK)
# The scheduler tick, from the kernel's config when it is readable (0: not).
HZ=$( (zcat /proc/config.gz 2>/dev/null || cat "/boot/config-$(uname -r)" 2>/dev/null || true) |
  sed -n 's/^CONFIG_HZ=//p')
TICK_MS=0
if [ -n "$HZ" ]; then TICK_MS=$(python3 -c 'import sys; print(1000 / int(sys.argv[1]))' "$HZ"); fi

UP_PID=
PROXY_PID=
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
}
trap cleanup EXIT

# A field of /proc/PID/status.
status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# User plus system CPU ticks of PID.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local bin=$1 round=$2 db="$WORK/requests.db"
  taskset -c "$SERVER_CPU" "$NGINX" -c "$PWD/$WORK/nginx/nginx.conf" -e "$PWD/$WORK/nginx/logs/error.log" &
  UP_PID=$!
  if [ "$bin" = nginx ]; then
    taskset -c "$SERVER_CPU" "$NGINX" -c "$PWD/$WORK/proxy/nginx.conf" -e "$PWD/$WORK/proxy/logs/error.log" &
  else
    RUST_LOG=warn taskset -c "$SERVER_CPU" "$bin" run -c "$WORK/gateway.yaml" >/dev/null 2>&1 &
  fi
  PROXY_PID=$!
  local up_worker=
  for _ in $(seq 1 100); do
    up_worker=$(pgrep -P "$UP_PID" | head -1 || true)
    [ -n "$up_worker" ] && curl -s -o /dev/null "${HEADER[@]}" "http://127.0.0.1:$GW_PORT/api/public" && break
    sleep 0.1
  done
  [ -n "$up_worker" ] || { echo "the upstream did not start" >&2; exit 1; }
  taskset -c "$LOAD_CPU" oha -z 2s -c "$CONNS" --no-tui "${HEADER[@]}" "http://127.0.0.1:$GW_PORT/api/public" >/dev/null
  local wakes0 preempted0 cpu0 wakes1 preempted1 cpu1
  wakes0=$(status "$up_worker" voluntary_ctxt_switches)
  preempted0=$(status "$PROXY_PID" nonvoluntary_ctxt_switches)
  cpu0=$(ticks "$PROXY_PID")
  rm -f "$db"
  taskset -c "$LOAD_CPU" oha -z "$DUR" -c "$CONNS" --no-tui --output-format json --db-url "$db" \
    "${HEADER[@]}" "http://127.0.0.1:$GW_PORT/api/public" >"$WORK/oha.json" 2>"$WORK/oha.err" &
  local load_pid=$! proxy_pid=$PROXY_PID
  if [ "$TRACE" = 1 ]; then trace "$load_pid" "$proxy_pid" "$up_worker"; fi
  wait "$load_pid"
  wakes1=$(status "$up_worker" voluntary_ctxt_switches)
  preempted1=$(status "$PROXY_PID" nonvoluntary_ctxt_switches)
  cpu1=$(ticks "$PROXY_PID")
  kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=
  kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=
  python3 - "$bin" "$round" "$db" "$WORK/oha.json" $((wakes1 - wakes0)) $((preempted1 - preempted0)) \
    $((cpu1 - cpu0)) "$TICKS" "$TICK_MS" <<'PY'
import collections, json, sqlite3, sys
bin, rnd, db, report = sys.argv[1:5]
wakes, preempted, ticks, hz = map(int, sys.argv[5:9])
tick_ms = float(sys.argv[9])
with open(report) as f:
    report = json.load(f)
codes = report["statusCodeDistribution"]
if set(codes) != {"200"}:
    sys.exit(f"not every answer was 200: {codes}")
rows = sqlite3.connect(db).execute("select end, duration from oha").fetchall()
d = sorted(r[1] for r in rows)
n = len(d)
secs = report["summary"]["total"]
q = lambda p: d[min(n - 1, int(p * n))] * 1e3
print(f"{bin} round {rnd}: {n / secs:,.0f} req/s, {ticks / hz / n * 1e6:.2f} µs CPU, "
      f"upstream wake-ups {wakes / n:.3f}, preempted {preempted / n:.3f} per request; "
      f"p50 {q(.5):.2f} p90 {q(.9):.2f} p95 {q(.95):.2f} p99 {q(.99):.2f} ms")
bins = collections.Counter(int(x * 1e4) for x in d)
print("  ms:% " + " ".join(f"{k / 10:.1f}:{100 * bins[k] / n:.1f}"
                          for k in sorted(bins) if bins[k] / n >= 0.001))
# When the slowest 5% finish: together (a share of them in the 1 ms
# windows that hold at least 8), and whether that follows the scheduler
# tick (shares by phase of the tick's period, in tenths; max / min, and
# the same at a period 2.5% longer, where a tick-bound pattern smears).
slow = [end for end, took in rows if took > q(.95) / 1e3]
windows = collections.Counter(int(end * 1e3) for end in slow)
together = sum(k for k in windows.values() if k >= 8) / max(1, len(slow))
line = f"  slowest 5%: {100 * together:.0f}% finish in 1 ms windows holding 8 or more of them"
if tick_ms:
    def spread(period):
        tenths = collections.Counter(int(end % period / period * 10) for end in slow)
        return max(tenths.values()) / max(1, min(tenths[i] for i in range(10)))
    line += (f"; by phase of the {tick_ms:g} ms tick, max/min {spread(tick_ms / 1e3):.1f}"
             f" (at {tick_ms * 1.025:g} ms: {spread(tick_ms * 1.025 / 1e3):.1f})")
print(line)
PY
  if [ "$TRACE" = 1 ]; then
    perf script -i "$WORK/trace.perf" -F comm,pid,tid,cpu,time,event,trace >"$WORK/trace.txt" 2>/dev/null
    python3 deploy/hop-trace.py "$WORK/trace.txt" "$WORK/sockets.txt" "$WORK/tcp.txt" \
      "$load_pid" "$proxy_pid" "$up_worker" "$GW_PORT"
  fi
}

# TRACE=1: 0.4 s of the run under `perf record`, 1.5 s into it. Either
# proxy is one process (nginx runs without a master) serving on its main
# thread (scopegate with `workers: 1`).
trace() {
  local load=$1 proxy=$2 up=$3
  sleep 1.5
  find "/proc/$load/fd" "/proc/$proxy/fd" -lname 'socket:*' -printf '%h %f %l\n' >"$WORK/sockets.txt"
  cat /proc/net/tcp >"$WORK/tcp.txt"
  taskset -c "$LOAD_CPU" perf record -q -p "$load,$proxy,$up" -o "$WORK/trace.perf" \
    -e syscalls:sys_enter_recvfrom,syscalls:sys_exit_recvfrom,syscalls:sys_enter_sendto \
    -e syscalls:sys_enter_writev,syscalls:sys_enter_write \
    -e syscalls:sys_enter_epoll_wait,syscalls:sys_exit_epoll_wait,sched:sched_switch \
    -- sleep 0.4 >/dev/null
}

for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do run "$bin" "$round"; done
done
