#!/usr/bin/python3
"""Figure 6 of QuiltNet (DAC 2022): per stage (board), compute time against host<->board
communication time for one batch, baseline (R=1) against Quilt (the paper's rate per model), and
the autoencoder's overhead on compute.

    compute        = median of stages/<k>/compute_s           (layers + autoencoder + overhead)
    communication  = median of stages/<k>/h2d_s + d2h_s       (host<->board transfers)
    AE overhead    = sum over stages of compute(R) - compute(R=1), over sum of compute(R=1)

Reads results/breakdown.h5 (experiments/breakdown.yaml), writes fig6_breakdown.png, .txt and .csv
next to it and prints the table with the paper's statements beside Quilt's. Under the `measured`
time model on CPU emulators there are no host<->board transfers (h2d/d2h are empty): the table then
shows the MPI waits instead and says so.
Run with /usr/bin/python3 (h5py, numpy, matplotlib). Exit codes: 0 ok, 2 missing or unusable input.
"""
import csv
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fig5_efficiency import LABELS, main_for  # noqa: E402

# Paper §4.3: the rates Quilt chose, and the autoencoder's share of compute ("< 0.4%").
PAPER_RATE = {"resnet50": 64.0, "unet": 7.5, "efficientnet_b0": 8.0}
PAPER_AE_OVERHEAD_PCT = 0.4


def breakdown(table):
    """Rows (arch, rate, stage, units, compute_s, comm_s, mpi_wait_s) and per-model AE overhead
    {arch: (quilt rate, percent)}."""
    rows, overhead = [], {}
    for arch in sorted({a for a, _ in table}):
        base = table.get((arch, 1.0))
        rates = sorted(r for a, r in table if a == arch and r != 1.0)
        if base is None or not rates:
            continue
        q = PAPER_RATE.get(arch) if PAPER_RATE.get(arch) in rates else rates[-1]
        for rate in (1.0, q):
            for k, s in enumerate(table[(arch, rate)]["stages"]):
                comm = s.get("h2d_s", 0.0) + s.get("d2h_s", 0.0)
                wait = s.get("recv_wait_s", 0.0) + s.get("send_wait_s", 0.0)
                rows.append((arch, rate, k, s["units"], s["compute_s"], comm, wait))
        c1 = sum(s["compute_s"] for s in base["stages"])
        cq = sum(s["compute_s"] for s in table[(arch, q)]["stages"])
        overhead[arch] = (q, 100 * (cq - c1) / c1 if c1 > 0 else float("nan"))
    return rows, overhead


def render(rows, overhead, skipped, time_models, path):
    out = io.StringIO()
    out.write(f"QuiltNet Fig. 6: compute vs communication per stage, one batch ({path})\n")
    board = bool(time_models - {"measured"})
    out.write(f"time model(s): {', '.join(sorted(time_models))}"
              + ("  (board time; communication = host<->board transfers)\n" if board else
                 "  (no host<->board link on CPU emulators; see the MPI waits)\n"))
    out.write(f"{'model':<16} {'R':>6} {'stage':>5} {'units':<34} {'compute ms':>11} "
              f"{'comm ms':>9} {'comm %':>7} {'MPI wait ms':>12}\n")
    for arch, rate, k, units, c, m, w in rows:
        share = 100 * m / (c + m) if c + m > 0 else 0
        out.write(f"{LABELS.get(arch, arch):<16} {rate:>6g} {k:>5} {units[:34]:<34} "
                  f"{1e3 * c:>11.3f} {1e3 * m:>9.3f} {share:>6.1f}% {1e3 * w:>12.3f}\n")
    out.write("\nautoencoder overhead on compute (paper: < 0.4%):\n")
    for arch, (q, pct) in overhead.items():
        verdict = "shows" if pct < PAPER_AE_OVERHEAD_PCT else "does not show"
        out.write(f"  {LABELS.get(arch, arch):<16} R={q:g}: {pct:+.3f}% of compute "
                  f"({verdict} the paper's bound)\n")
    if skipped:
        out.write(f"{skipped} run(s) failed or incomplete, left out\n")
    return out.getvalue()


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted({r[0] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(archs)), figsize=(4 * max(1, len(archs)), 4),
                             squeeze=False)
    for ax, arch in zip(axes[0], archs):
        mine = [r for r in rows if r[0] == arch]
        labels = [f"s{r[2]}\nR={r[1]:g}" for r in mine]
        c = [1e3 * r[4] for r in mine]
        m = [1e3 * r[5] for r in mine]
        x = np.arange(len(mine))
        ax.bar(x, c, label="compute")
        ax.bar(x, m, bottom=c, label="host<->board")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("ms per batch")
        ax.set_title(LABELS.get(arch, arch))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_outputs(table, skipped, time_models, path):
    rows, overhead = breakdown(table)
    if not rows:
        return f"{path}: needs an R=1 run and an R>1 run of a model"

    def write(base):
        with open(base + ".csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "rate", "stage", "units", "compute_s", "comm_s", "mpi_wait_s"])
            w.writerows(rows)
        plot(rows, base + ".png")
    return render(rows, overhead, skipped, time_models, path), write


def main(argv=None):
    return main_for("fig6_breakdown", "results/breakdown.h5", make_outputs, argv)


if __name__ == "__main__":
    sys.exit(main())
