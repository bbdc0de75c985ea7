#!/usr/bin/python3
"""Sums a Chrome trace of LibTorch's profiler by operator: self time (the event's duration less
that of the events nested in it), calls and share of the traced wall time.

    QUILT_BENCH_TRACE=/tmp/t.json build/release/bench/quilt_bench_train \\
        --benchmark_filter=train/resnet18w8-fmnist/ --benchmark_min_time=0.1
    /usr/bin/python3 bench/trace_ops.py /tmp/t.json [--top 30]
"""

import argparse
import collections
import json


def self_times(events):
    """{name: [self microseconds, calls]} over complete ("X") events, nested by time per thread."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e.get("tid")].append((float(e["ts"]), float(e["dur"]), e["name"]))
    out = collections.defaultdict(lambda: [0.0, 0])
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e[0], -e[1]))  # parents before the children they contain
        stack = []  # [end, name, self]
        def close(entry):
            out[entry[1]][0] += entry[2]
            out[entry[1]][1] += 1
        for ts, dur, name in evs:
            while stack and stack[-1][0] <= ts:
                close(stack.pop())
            if stack:
                stack[-1][2] -= dur
            stack.append([ts + dur, name, dur])
        while stack:
            close(stack.pop())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    with open(args.trace) as f:
        events = json.load(f)
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    xs = [e for e in events if e.get("ph") == "X"]
    if not xs:
        raise SystemExit(f"{args.trace}: no complete events")
    wall = max(float(e["ts"]) + float(e["dur"]) for e in xs) - min(float(e["ts"]) for e in xs)
    totals = self_times(xs)
    traced = sum(v[0] for v in totals.values())
    print(f"traced wall {wall / 1e3:.1f} ms, operator self time {traced / 1e3:.1f} ms "
          f"({100 * traced / wall:.0f}%)")
    print(f"{'self ms':>9} {'share':>6} {'calls':>7} {'us/call':>8}  operator")
    for name, (us, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{us / 1e3:9.2f} {100 * us / wall:5.1f}% {n:7d} {us / n:8.1f}  {name}")


if __name__ == "__main__":
    main()
