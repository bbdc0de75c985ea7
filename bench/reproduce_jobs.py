#!/usr/bin/python3
"""`quilt reproduce --jobs N` against `--jobs 1`, side by side: the same experiments (--only) at
the same scale, alternating, each invocation in a fresh output folder. Prints per invocation the
experiments phase (the last experiment's end, from reproduce.json's end_s) and the sum of the
experiments' wall times, then the median speed-up with the load average beside (the host must be
otherwise quiet for the ratio to mean anything).

  bench/reproduce_jobs.py --build build/release [--jobs 2] [--only feasibility,accuracy,tradeoff]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="feasibility,accuracy,tradeoff")
    ap.add_argument("--scale", default="smoke")
    ap.add_argument("--repetitions", type=int, default=2)
    a = ap.parse_args(argv)
    if a.jobs < 2 or a.repetitions < 1:
        ap.error("--jobs must be >= 2 and --repetitions >= 1")
    quilt = os.path.join(a.build, "bin", "quilt")
    root = tempfile.mkdtemp(prefix="quilt-reproduce-jobs-")
    phase = {1: [], a.jobs: []}
    try:
        for rep in range(a.repetitions):
            for jobs in (1, a.jobs):
                out = os.path.join(root, f"j{jobs}-{rep}")
                r = subprocess.run([quilt, "reproduce", "--scale", a.scale, "--out", out,
                                    "--only", a.only, "--jobs", str(jobs)],
                                   capture_output=True, text=True)
                with open(os.path.join(out, "reproduce.json")) as f:
                    m = json.load(f)
                ran = [e for e in m["experiments"] if e["start_s"] >= 0]
                bad = [e["name"] for e in ran if e["status"] != "ok"]
                if bad:
                    print(r.stdout + r.stderr, file=sys.stderr)
                    sys.exit(f"experiments failed: {bad}")
                end = max(e["end_s"] for e in ran)
                phase[jobs].append(end)
                print(f"--jobs {jobs}: experiments phase {end:.1f} s, sum of experiment wall "
                      f"times {sum(e['wall_s'] for e in ran):.1f} s ({len(ran)} experiments)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one, n = statistics.median(phase[1]), statistics.median(phase[a.jobs])
    print(f"speed-up of --jobs {a.jobs} over --jobs 1 (median experiments phase): {one / n:.2f}x "
          f"({one:.1f} s vs {n:.1f} s); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
