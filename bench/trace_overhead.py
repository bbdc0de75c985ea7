#!/usr/bin/python3
"""What recording the timeline (measurement.trace) costs in throughput, measured side by side in
one `quilt run`: a zip sweep alternates runs with the trace on and off (on, off, on, off, ...;
the data seed only makes each run's id distinct), and the throughput of each traced run is
compared with the untraced run next to it; the estimate is the median of those pair ratios. The
default is the harness's worst case: `null` boards (no compute, so per-batch bookkeeping is the
largest share of a batch) on three ranks.

    /usr/bin/python3 bench/trace_overhead.py --build build/release [--backend null|emulator]
        [--pairs 8] [--batches 400] [--ranks 3]

Prints the ratio traced/untraced and "PASS" when the trace costs at most 1% (exit 0), else
"FAIL" (exit 1).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

EXPERIMENT = """quilt: 1
name: trace-overhead
model: {{arch: mlp, input: [512], classes: 10, seed: 0}}
boards: {{count: {ranks}, backend: {backend}, threads: 1}}
partition: {{cuts: [{cuts}]}}
autoencoder: {{rate: 1}}
measurement: {{batch: 8, warmup_batches: 20, batches: {batches}, check_outputs: false}}
sweep:
  zip:
    measurement.trace: [{traces}]
    data.seed: [{seeds}]
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default="build/release")
    p.add_argument("--backend", default="null", choices=["null", "emulator"])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--batches", type=int, default=400)
    p.add_argument("--ranks", type=int, default=3, choices=[2, 3])
    args = p.parse_args()
    sys.path.insert(0, os.path.join(args.build, "python"))
    import quilt

    cuts = "after_hidden1" if args.ranks == 2 else "after_hidden1, after_hidden2"
    traces = ", ".join(["true", "false"] * args.pairs)
    seeds = ", ".join(str(i + 1) for i in range(2 * args.pairs))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        exp = os.path.join(tmp, "trace_overhead.yaml")
        out = os.path.join(tmp, "trace_overhead.h5")
        with open(exp, "w") as f:
            f.write(EXPERIMENT.format(ranks=args.ranks, backend=args.backend, cuts=cuts,
                                      batches=args.batches, traces=traces, seeds=seeds))
        cmd = ["mpirun", "-n", str(args.ranks), os.path.join(args.build, "bin", "quilt"), "run",
               exp, "--output", out]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"quilt run failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        runs = quilt.read_results(out)["runs"]
    on = [x["throughput_sps"] for x in runs if x["params"]["measurement.trace"] == "true"]
    off = [x["throughput_sps"] for x in runs if x["params"]["measurement.trace"] == "false"]
    # Runs alternate on, off, on, off: the ratio within each adjacent pair cancels the machine's
    # drift (other load, frequency), and the median of the pair ratios is the estimate.
    ratio = statistics.median(a / b for a, b in zip(on, off))
    print(f"{args.backend} boards, {args.ranks} ranks, {args.batches} batches per run, "
          f"{args.pairs} alternated pairs")
    print(f"  trace on : median {statistics.median(on):12.1f} samples/s  "
          f"(runs: {', '.join(f'{v:.0f}' for v in on)})")
    print(f"  trace off: median {statistics.median(off):12.1f} samples/s  "
          f"(runs: {', '.join(f'{v:.0f}' for v in off)})")
    cost = 100 * (1 - ratio)
    verdict = "PASS" if cost <= 1.0 else "FAIL"
    print(f"  traced / untraced throughput (median of {len(on)} adjacent pairs) = {ratio:.4f}: "
          f"the trace costs {cost:.2f}% "
          f"(target <= 1%) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
