#!/usr/bin/env python3
"""Runs every benchmark of bench/ and prints each figure as a ratio measured in the same run.

Usage (as `make bench` does): /usr/bin/python3 bench/run_all.py --build build/release
  1. emulator stage compute vs PyTorch optimize_for_inference (emulator_vs_pytorch.py)
  2. transport and pipeline efficiency under mpirun -n 2 (quilt_bench_mpi)
  3. the cut search (quilt_bench_partition)
  4. training throughput vs the same model trained by python3-torch (train_vs_pytorch.py)
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path


def run(title, cmd, env):
    print(f"\n== {title}\n$ {' '.join(map(str, cmd))}", flush=True)
    rc = subprocess.run(list(map(str, cmd)), env=env).returncode
    if rc != 0:
        print(f"(exit code {rc})")
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default="build/release", help="CMake build directory")
    args = ap.parse_args()
    bench = Path(args.build) / "bench"
    missing = [b for b in ("quilt_bench_emulator", "quilt_bench_mpi", "quilt_bench_partition",
                         "quilt_bench_train")
               if not (bench / b).exists()]
    if missing:
        sys.exit(f"run_all.py: {', '.join(missing)} not built in {bench} "
                 "(configure with QUILT_BUILD_BENCH=ON, the default)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    here = Path(__file__).resolve().parent
    rcs = [
        run("emulator stage compute vs PyTorch optimize_for_inference (1 thread, batch 8)",
            ["/usr/bin/python3", here / "emulator_vs_pytorch.py", bench / "quilt_bench_emulator"], env),
        run("transport and pipeline efficiency (2 ranks)",
            ["mpirun", "-n", "2", bench / "quilt_bench_mpi"], env),
        run("cut search", [bench / "quilt_bench_partition", "--benchmark_min_time=0.2"], env),
        run("training throughput vs python3-torch (1 thread, batch 64)",
            ["/usr/bin/python3", here / "train_vs_pytorch.py", bench / "quilt_bench_train"], env),
    ]
    sys.exit(max(rcs))


if __name__ == "__main__":
    main()
