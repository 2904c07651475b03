#!/usr/bin/env python3
"""Where a hop's requests wait, from a kernel trace (deploy/latency-shape.sh
with TRACE=1 records it and calls this).

    deploy/hop-trace.py TRACE SOCKETS TCP LOAD PROXY UPSTREAM PORT

TRACE is `perf script` output of syscall and sched_switch tracepoints for
the load generator (pid LOAD), the proxy (pid PROXY: the process that owns
the client sockets and serves them on its main thread) and the upstream
worker (pid UPSTREAM); SOCKETS lists "/proc/PID/fd FD socket:[INODE]"
for the sockets of LOAD and PROXY; TCP is /proc/net/tcp. A client connection is matched across the two
processes by its ports. For each request the load generator's write, the
proxy's read of it, the proxy's write of the answer and the load
generator's read of that answer split its latency in three:

  pickup     the request sits in the proxy's socket until the proxy reads it
  residence  read by the proxy until the answer is written (the upstream's
             part included)
  delivery   written until the load generator has read it

Then, on the proxy's core: how long the proxy and the upstream run before
they are preempted or go to sleep, and how often the proxy polls epoll.
"""
import bisect
import collections
import re
import sys

trace, sockets, tcp, load, proxy, upstream, port = sys.argv[1:8]
port = int(port)

# inode -> (local port, remote port)
ports = {}
with open(tcp) as f:
    for line in f:
        fields = line.split()
        if len(fields) > 9 and fields[0] != "sl":
            ports[fields[9]] = (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16))
# (pid, fd) -> the client's port, the connection's name on both sides
conn = {}
with open(sockets) as f:
    for line in f:
        directory, fd, link = line.split()
        pid, inode = directory.split("/")[2], re.sub(r"\D", "", link)
        local, remote = ports.get(inode, (None, None))
        if pid == load and remote == port:
            conn[(pid, int(fd))] = local
        elif pid == proxy and local == port:
            conn[(pid, int(fd))] = remote

LINE = re.compile(r"^\s*.+?\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+\S+:(\w+):\s*(.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")
events = collections.defaultdict(list)  # client port -> [(time, kind)]
switches = []  # (time, prev pid, prev state, next pid)
polls = []  # (entered, returned) of the proxy's epoll_wait
reading = {}  # tid -> fd of a recvfrom under way
polling = {}  # tid -> when the proxy's epoll_wait under way was entered
with open(trace) as f:
    for line in f:
        m = LINE.match(line)
        if not m:
            continue
        pid, tid, _cpu, t, event, rest = m.groups()
        t = float(t)
        if event == "sched_switch":
            d = dict(FIELD.findall(rest))
            switches.append((t, d["prev_pid"], d["prev_state"][0], d["next_pid"]))
            continue
        if pid not in (load, proxy):
            continue
        if event == "sys_enter_recvfrom":
            reading[tid] = int(rest.split(",")[0].split(":")[1], 16)
        elif event == "sys_exit_recvfrom":
            fd = reading.pop(tid, None)
            key = conn.get((pid, fd))
            if key is not None and 0 < int(rest.strip(), 16) < 1 << 63:
                events[key].append((t, "load_read" if pid == load else "proxy_read"))
        elif event in ("sys_enter_writev", "sys_enter_write", "sys_enter_sendto"):
            key = conn.get((pid, int(rest.split(",")[0].split(":")[1], 16)))
            if key is not None:
                events[key].append((t, "load_write" if pid == load else "proxy_write"))
        elif event == "sys_enter_epoll_wait" and pid == proxy:
            polling[tid] = t
        elif event == "sys_exit_epoll_wait" and pid == proxy and tid in polling:
            polls.append((polling.pop(tid), t))

# A request: the load generator's write, then the proxy's first read, the
# proxy's first write and the load generator's first read after it.
ORDER = ("load_write", "proxy_read", "proxy_write", "load_read")
requests = []
for seen in events.values():
    seen.sort()
    step = None
    for t, kind in seen:
        if kind == "load_write":
            step = [t]
        elif step is not None and kind == ORDER[len(step)]:
            step.append(t)
            if len(step) == 4:
                requests.append(step)
                step = None
if not requests:
    sys.exit("trace: no whole request matched (is perf allowed to trace here?)")


def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1e6


latency = sorted(r[3] - r[0] for r in requests)
p95 = latency[int(0.95 * (len(latency) - 1))]
print(f"  traced: {len(requests)} requests over {len(events)} connections; µs p50/p90/p99:")
for label, chosen in (("all", requests), ("slowest 5%", [r for r in requests if r[3] - r[0] > p95])):
    parts = []
    for name, a, b in (("pickup", 0, 1), ("residence", 1, 2), ("delivery", 2, 3), ("latency", 0, 3)):
        v = [r[b] - r[a] for r in chosen]
        parts.append(f"{name} {q(v, .5):.0f}/{q(v, .9):.0f}/{q(v, .99):.0f}")
    print(f"    {label:>10}: " + ", ".join(parts))

# Runs on the proxy's core: from being switched in to being switched out,
# by the state it left in (R: preempted, S: gone to sleep).
runs = collections.defaultdict(list)
since = {}
for t, prev, state, nxt in switches:
    if prev in since:
        runs[(prev, state)].append(t - since.pop(prev))
    since[nxt] = t
span = switches[-1][0] - switches[0][0] if switches else 0
for who, name in ((proxy, "proxy"), (upstream, "upstream")):
    for state, how in (("R", "preempted"), ("S", "went to sleep")):
        v = runs.get((who, state), [])
        if v and span:
            print(f"  {name} runs that ended {how}: {len(v) / span:,.0f}/s, "
                  f"µs p50/p90/p99 {q(v, .5):.0f}/{q(v, .9):.0f}/{q(v, .99):.0f}")
if len(polls) > 1:
    gaps = [b[1] - a[1] for a, b in zip(polls, polls[1:])]
    returns = [p[1] for p in polls]
    between = collections.Counter(
        bisect.bisect_left(returns, r[1]) - bisect.bisect_right(returns, r[0]) for r in requests)
    print(f"  proxy epoll_wait: {len(polls) / (polls[-1][1] - polls[0][0]):,.0f}/s, µs between "
          f"returns p50/p90/p99 {q(gaps, .5):.0f}/{q(gaps, .9):.0f}/{q(gaps, .99):.0f}; "
          "returns between a request's arrival and its read: "
          + ", ".join(f"{k}: {100 * v / len(requests):.1f}%" for k, v in sorted(between.items())))
