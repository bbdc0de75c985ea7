#!/usr/bin/python3
"""Quilt's end-to-end pipeline throughput against its peer, side by side in one run.

Quilt: `mpirun -n 2 quilt run` on the quickstart configuration (experiments/quickstart.yaml:
ResNet-50 cut after layer3, 2 emulated boards, batch 8, one thread per rank, outputs checked),
one rate per run, more measured batches than the quickstart, throughput_sps from the result file
(the harness's own measurement). Peer: `mpirun -n 2 bench/pipeline_peer.py` (the same pipeline
in mpi4py with each stage through torch.jit.optimize_for_inference in float32, measured the same
way). The two alternate (Quilt R=1, peer R=1, Quilt R=64, peer R=64, then again) so that a
change of load on the machine affects both sides of a ratio alike; the table gives the median
of each side's repeats and the median of the per-repeat ratios Quilt/peer.

    /usr/bin/python3 bench/pipeline_vs_peer.py --build build/release [--repeats 3]
        [--batches 16] [--rates 1,64] [--precision fp32|bf16|int8]

--precision sets `boards.precision` in Quilt's configuration (the precision key of issue 13);
the peer always runs float32, which is the comparison the issue's targets are stated against.
fp32 (the default) leaves the key out, so the script also runs on a Quilt without that key.
Measure on a quiet machine: the table prints the load average before and after.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

import h5py
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def quilt_config(rate, batches, warmup, precision, output):
    """The quickstart experiment for one rate, with `batches` measured batches."""
    with open(os.path.join(ROOT, "experiments", "quickstart.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("sweep", None)
    cfg["name"] = f"pipeline_vs_peer_r{rate}"
    cfg["autoencoder"]["rate"] = rate
    cfg["measurement"]["batches"] = batches
    cfg["measurement"]["warmup_batches"] = warmup
    cfg["output"] = output
    if precision != "fp32":
        cfg["boards"]["precision"] = precision
        if precision == "int8":  # activation ranges from 2 batches of the synthetic data
            cfg["boards"]["calibration_batches"] = 2
    return cfg


def run(cmd, env):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {shlex.join(cmd)}\n{res.stdout}\n{res.stderr}")
    return res.stdout


def quilt_sps(quilt, cfg, tmp, env):
    path = os.path.join(tmp, cfg["name"] + ".yaml")
    if os.path.exists(cfg["output"]):
        os.remove(cfg["output"])
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    run(["mpirun", "-n", "2", quilt, "run", path], env)
    with h5py.File(cfg["output"], "r") as f:
        ids = list(f["run_order"].asstr()[()])
        r = f["runs"][ids[-1]]
        if r.attrs["status"] != "ok":
            sys.exit(f"quilt run {cfg['name']}: status {r.attrs['status']}")
        return float(r.attrs["throughput_sps"])


def peer_sps(rate, batches, warmup, env):
    out = run(["mpirun", "-n", "2", sys.executable, os.path.join(HERE, "pipeline_peer.py"),
               "--rate", str(rate), "--batches", str(batches), "--warmup", str(warmup)], env)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return float(json.loads(lines[-1])["throughput_sps"])


def load_average():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/release", help="CMake build directory")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats per side")
    ap.add_argument("--batches", type=int, default=16, help="measured batches per run (>= 2)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up batches per run")
    ap.add_argument("--rates", default="1,64", help="autoencoder rates, comma-separated")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                    help="Quilt's boards.precision (the peer stays float32)")
    args = ap.parse_args()
    quilt = os.path.join(args.build, "bin", "quilt")
    if not os.access(quilt, os.X_OK):
        sys.exit(f"{quilt} not found: build the quilt target first")
    if args.batches < 2 or args.repeats < 1:
        sys.exit("--batches must be >= 2 and --repeats >= 1")
    rates = [int(r) for r in args.rates.split(",")]
    env = dict(os.environ, **MPI_ENV)
    load_before = load_average()
    q = {r: [] for r in rates}
    p = {r: [] for r in rates}
    with tempfile.TemporaryDirectory(prefix="quilt-peer-") as tmp:
        for rep in range(args.repeats):
            for rate in rates:
                cfg = quilt_config(rate, args.batches, args.warmup, args.precision,
                                   os.path.join(tmp, f"r{rate}.h5"))
                q[rate].append(quilt_sps(quilt, cfg, tmp, env))
                p[rate].append(peer_sps(rate, args.batches, args.warmup, env))
                print(f"  repeat {rep} R={rate}: quilt {q[rate][-1]:.2f}, peer {p[rate][-1]:.2f}"
                      f" samples/s", file=sys.stderr, flush=True)
    print("command: /usr/bin/python3 " + shlex.join(sys.argv))
    print(f"ResNet-50 cut after layer3, 2 ranks, batch 8, 1 thread per rank; Quilt "
          f"{args.precision}, peer fp32 (mpi4py + torch.jit.optimize_for_inference); "
          f"{args.batches} measured batches, {args.repeats} alternating repeats")
    print(f"load average before: {load_before}; after: {load_average()}")
    print(f"{'R':>4} {'Quilt samples/s':>16} {'peer samples/s':>15} {'Quilt/peer':>11}")
    for rate in rates:
        ratios = [a / b for a, b in zip(q[rate], p[rate])]
        print(f"{rate:>4} {statistics.median(q[rate]):>16.2f} {statistics.median(p[rate]):>15.2f}"
              f" {statistics.median(ratios):>11.2f}   (per repeat: "
              + ", ".join(f"{r:.2f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
