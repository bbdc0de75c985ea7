#!/usr/bin/python3
"""Per-run cost of committing runs to the result file, early against late in a long sweep.

Runs a sweep of N `null`-board runs (no compute: what remains is the harness and the result
file) under mpirun and reports the median time between consecutive run ends (end_unix_s) over
the first and the last 1,000 runs, and their ratio. Each run is appended to the file (results/
SCHEMA.md, "Atomicity"), so the ratio stays near 1; with the whole-file rewrite the former
harness did, it grew with the file (0.015 s -> 0.5 s per run between run 1 and run 400).

    bench/append_bench.py --build build/release [--runs 10000] [--ranks 2] [--trace on|off] [--dir /tmp]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

EXPERIMENT = """quilt: 1
name: append_bench
model: {{arch: mlp, input: [16], classes: 4}}
boards: {{count: {ranks}, backend: null}}
partition: {{cuts: [{cuts}]}}
measurement: {{batch: 2, warmup_batches: 1, batches: 2, repetitions: 1{trace}}}
sweep:
  matrix:
    model.seed: {seeds}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--ranks", type=int, default=2, choices=[1, 2, 3])
    ap.add_argument("--window", type=int, default=1000, help="runs compared at each end")
    ap.add_argument("--trace", choices=["default", "on", "off"], default="default",
                    help="measurement.trace: default (on: these runs are short), on or off")
    ap.add_argument("--dir", default=None, help="where the result file goes (default: a temp dir)")
    a = ap.parse_args()
    cuts = ", ".join(["after_hidden1", "after_hidden2"][: a.ranks - 1])
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        exp = Path(d) / "append_bench.yaml"
        exp.write_text(EXPERIMENT.format(ranks=a.ranks, cuts=cuts, trace={"default": "", "on": ", trace: true", "off": ", trace: false"}[a.trace],
                                         seeds=list(range(1, a.runs + 1))))
        out = Path(d) / "append_bench.h5"
        t0 = time.time()
        r = subprocess.run(["mpirun", "-n", str(a.ranks), str(Path(a.build) / "bin" / "quilt"),
                            "run", str(exp), "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wall = time.time() - t0
        if r.returncode != 0:
            sys.exit(f"quilt run failed ({r.returncode}):\n{r.stderr[-3000:]}")
        with h5py.File(out, "r") as f:
            ids = list(f["run_order"].asstr()[()])
            ends = [float(f["runs"][i].attrs["end_unix_s"]) for i in ids]
        size = out.stat().st_size
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    w = min(a.window, len(gaps) // 2)
    early, late = statistics.median(gaps[:w]), statistics.median(gaps[-w:])
    # The largest resident set of any process of the job (ranks included: mpirun reaps them).
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{len(ids)} null runs on {a.ranks} rank(s), trace {a.trace}, in {wall:.1f} s, file {size / 2**20:.1f} MiB, "
          f"peak RSS of a rank {peak_mib:.0f} MiB")
    print(f"per-run time, median of the first {w}: {1e3 * early:.2f} ms; of the last {w}: "
          f"{1e3 * late:.2f} ms; late/early = {late / early:.2f}")


if __name__ == "__main__":
    main()
