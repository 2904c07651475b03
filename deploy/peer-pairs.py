#!/usr/bin/env python3
"""Round-by-round ratios of scopegate to a peer in peer-benchmark results.

The peer benchmark (../shared/bench, copied to target/peer-bench) runs its
peers interleaved, round after round, so each round of scopegate (GW) has a
round of the reference peer beside it in time. Ratios taken round by round
cancel the machine's slow drift, which on these small machines is larger
than the differences worth measuring; their medians over many rounds (and
in how many rounds each goal held) say more than one run's medians.

    deploy/peer-pairs.py [--peer P1-nginx] RESULT_DIR...

Each RESULT_DIR is one run's directory (target/peer-bench/results/STAMP).
Prints, per round, scopegate's req/s, proxy CPU per request, p99 and p50 as
ratios to the peer's; then for each measure the median, the range and the
rounds in which scopegate did at least as well (req/s >= 1, the rest <= 1).
"""

import argparse
import json
import os
import statistics
import sys


def round_figures(directory, peer, number):
    """(req/s, CPU µs per request, p99 ms, p50 ms) of one peer's round, or None."""
    base = os.path.join(directory, f"{peer}.r{number}")
    try:
        with open(base + ".json") as f:
            load = json.load(f)
        with open(base + ".cpu-before.json") as f:
            before = json.load(f)
        with open(base + ".cpu-after.json") as f:
            after = json.load(f)
    except FileNotFoundError:
        return None
    requests = sum(load["statusCodeDistribution"].values())
    if requests == 0:
        return None
    ticks = after["procs"]["proxy"] - before["procs"]["proxy"]
    cpu_us = ticks / after["clk_tck"] / requests * 1e6
    latency = load["latencyPercentiles"]
    return (
        load["summary"]["requestsPerSec"],
        cpu_us,
        latency["p99"] * 1e3,
        latency["p50"] * 1e3,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default="P1-nginx", help="the reference peer (default P1-nginx)")
    parser.add_argument("dirs", nargs="+", metavar="RESULT_DIR")
    args = parser.parse_args()

    rows = []
    for directory in args.dirs:
        number = 1
        while True:
            ours = round_figures(directory, "GW", number)
            theirs = round_figures(directory, args.peer, number)
            if ours is None or theirs is None:
                break
            ratios = tuple(o / t for o, t in zip(ours, theirs))
            rows.append((os.path.basename(os.path.normpath(directory)), number, ratios))
            number += 1
    if not rows:
        sys.exit(f"no rounds with both GW and {args.peer} in {' '.join(args.dirs)}")

    names = ("req/s", "CPU/req", "p99", "p50")
    for run, number, ratios in rows:
        cells = "  ".join(f"{name} {ratio:.3f}" for name, ratio in zip(names, ratios))
        print(f"{run} r{number}  {cells}")
    print(f"scopegate / {args.peer}, {len(rows)} rounds:")
    for i, name in enumerate(names):
        values = [ratios[i] for _, _, ratios in rows]
        held = sum(1 for v in values if (v >= 1.0 if i == 0 else v <= 1.0))
        print(
            f"  {name:8} median {statistics.median(values):.3f}"
            f"  range {min(values):.3f}..{max(values):.3f}"
            f"  at least as good in {held}/{len(values)}"
        )


if __name__ == "__main__":
    main()
