#!/usr/bin/python3
"""Cost of one full training epoch (60000 Fashion-MNIST images + one evaluation of the 10000 test
images) of the accuracy experiments' ResNet-18 at each width of bench/epoch_cost.yaml, and of one
epoch of feasibility.yaml's MLPs per UCI set, measured by the harness (issue 10's budget).

Each run is its own `mpirun -n RANKS quilt run --run-index I` process, timed wall to wall and in
CPU seconds of all its processes (user + sys of the waited-for children, all ranks together):
  wall:  train s/epoch = 60000 / samples_per_s (the run's timed epoch on 3200 images),
         eval s = process wall - train_s - start-up wall (scale `startup`: 64 images, 64 tested);
  CPU:   the run's CPU seconds less the start-up's, split into training and evaluation in the
         proportion of their wall times, training scaled to 60000 images; divided by the ranks,
         this is the wall time of an epoch on an otherwise idle machine (one thread per rank).
On a loaded machine (the load average is printed) wall figures overstate an idle machine's time
and the CPU figures are the ones to budget with.
Usage: /usr/bin/python3 bench/epoch_cost.py [--scale one|two] [--runs I,J] [--build DIR] [--mlp]
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parent.parent
FULL_TRAIN = 60000
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def run_one(quilt, exp, scale, index, ranks, out):
    cmd = ["mpirun", "-n", str(ranks), str(quilt), "run", str(exp), "--scale", scale,
           "--run-index", str(index), "--output", str(out), "--overwrite"]
    t0 = time.monotonic()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.monotonic() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    with h5py.File(out, "r") as f:
        (rid,) = [s(x) for x in f["run_order"][()]]
        g = f["runs"][rid]
        params = {k: s(v) for k, v in g["params"].attrs.items()}
        t = g["training"]
        return (wall, cpu), params, dict(t.attrs), {k: t[k][()] for k in ("epoch_s", "samples_per_s")}


def count_runs(quilt, exp, scale):
    r = subprocess.run([str(quilt), "validate", str(exp), "--scale", scale], capture_output=True,
                       text=True, env=ENV)
    if r.returncode != 0:
        sys.exit(r.stdout + r.stderr)
    # validate says "FILE: ok (N run(s), scale S)".
    return int(re.search(r"\((\d+) run", r.stdout).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="one", choices=["one", "two"])
    ap.add_argument("--build", default=str(ROOT / "build" / "release"))
    ap.add_argument("--mlp", action="store_true", help="also time feasibility.yaml's MLPs")
    ap.add_argument("--runs", help="comma-separated run indices of the scale (default: all)")
    a = ap.parse_args()
    quilt = Path(a.build) / "bin" / "quilt"
    exp = ROOT / "bench" / "epoch_cost.yaml"
    ranks = 2 if a.scale == "two" else 1
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{ranks} rank(s), 1 thread each")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.h5"
        startup = [run_one(quilt, exp, "startup" if ranks == 1 else "startup_two", 0, ranks, out)[0] for _ in range(2)]
        start_wall, start_cpu = min(w for w, _ in startup), min(c for _, c in startup)
        print(f"start-up (64 images, 64 tested): {start_wall:.1f} s wall, {start_cpu:.1f} CPU s")
        print(f"{'width':>6} {'R':>4} {'samples/s':>10} | wall: {'train/ep':>8} {'eval':>6} "
              f"{'epoch s':>8} | CPU/ranks: {'train/ep':>8} {'eval':>6} {'epoch s':>8} | "
              f"{'load':>5}")
        indices = range(count_runs(quilt, exp, a.scale))
        if a.runs:
            indices = [int(x) for x in a.runs.split(",")]
        for i in indices:
            (wall, cpu), p, t, d = run_one(quilt, exp, a.scale, i, ranks, out)
            sps = float(d["samples_per_s"][0])
            scale = FULL_TRAIN / float(t["train_samples"])
            train = FULL_TRAIN / sps
            evaluation = max(0.0, wall - float(t["train_s"]) - start_wall)
            share = float(t["train_s"]) / max(1e-9, wall - start_wall)
            work_cpu = max(0.0, cpu - start_cpu) / ranks
            train_cpu, eval_cpu = work_cpu * share * scale, work_cpu * (1 - share)
            print(f"{p.get('model.width', '1'):>6} {p['autoencoder.rate']:>4} {sps:10.1f} | "
                  f"      {train:8.1f} {evaluation:6.1f} {train + evaluation:8.1f} | "
                  f"           {train_cpu:8.1f} {eval_cpu:6.1f} {train_cpu + eval_cpu:8.1f} | "
                  f"{os.getloadavg()[0]:5.2f}")
        if a.mlp:
            text = (ROOT / "experiments" / "feasibility.yaml").read_text()
            text = text.replace("  epochs: 300\n  converge_window: 5", "  epochs: 20\n  converge_window: 0")
            text = text.replace("training.seed: [1, 2, 3]", "training.seed: [1]")
            text = text.replace("here:\n    training.epochs: 300", "here:\n    training.epochs: 20")
            fexp = Path(tmp) / "feasibility.yaml"
            fexp.write_text(text)
            print("feasibility MLP, 20 epochs, 1 rank:")
            print(f"{'data':>18} {'R':>4} {'train s/epoch':>14} {'run wall s':>11} "
                  f"{'run CPU s':>10}")
            for i in range(count_runs(quilt, fexp, "here")):
                (wall, cpu), p, t, d = run_one(quilt, fexp, "here", i, 1, out)
                print(f"{p['data.kind']:>18} {p['autoencoder.rate']:>4} "
                      f"{float(t['train_s']) / len(d['epoch_s']):14.3f} {wall:11.1f} {cpu:10.1f}")


if __name__ == "__main__":
    main()
