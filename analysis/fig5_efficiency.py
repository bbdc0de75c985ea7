#!/usr/bin/python3
"""Figure 5 of QuiltNet (DAC 2022): throughput and energy-efficiency gain against the reduction rate
R, for each model cut in two with an autoencoder at the cut, on two boards.

    throughput gain        = throughput_sps(R) / throughput_sps(R=1) - 1      (same model, same cut)
    energy-efficiency gain = energy_per_sample_j(R=1) / energy_per_sample_j(R) - 1

Reads results/efficiency.h5 (experiments/efficiency.yaml), writes fig5_efficiency.png,
fig5_efficiency.txt and fig5_efficiency.csv next to it, and prints the table with the paper's
numbers beside Quilt's. Runs that failed or are incomplete are left out and counted. Times are
board time when the runs used the dilated or modeled time model (the table says which).
Run with /usr/bin/python3 (h5py, numpy, matplotlib). Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import csv
import io
import math
import os
import sys

import h5py
import numpy as np

# Paper §4.3 / Fig. 5 (two Alveo U200 boards, PCIe 3.0): (model, R) -> (throughput gain,
# energy-efficiency gain), in percent.
PAPER = {
    ("resnet50", 64.0): (20.8, 19.2),
    ("unet", 7.5): (30.5, 28.4),
    ("unet", 120.0): (34.9, 32.9),
    ("efficientnet_b0", 8.0): (21.4, 17.5),
}
LABELS = {"resnet50": "ResNet-50", "unet": "UNet", "efficientnet_b0": "EfficientNet-B0"}


class InputError(Exception):
    """The result file is missing or does not hold what the figure needs."""


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_runs(path):
    """Returns ({(arch, rate): run dict}, skipped, time models seen). Run dict: throughput_sps,
    energy_per_sample_j (None when unavailable), cut, stages (list of dicts of medians)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file (run: mpirun -n 2 quilt run "
                         "experiments/efficiency.yaml)")
    table, skipped, models = {}, 0, set()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not an HDF5 file ({e})")
    with f:
        if _text(f.attrs.get("quilt_format", "")) != "quilt-results":
            raise InputError(f"{path}: not a Quilt result file (no quilt_format attribute)")
        if "runs" not in f:
            raise InputError(f"{path}: has no /runs group")
        for run_id in f["runs"]:
            g = f["runs"][run_id]
            if _text(g.attrs.get("status", "")) != "ok" or int(g.attrs.get("complete", 0)) != 1:
                skipped += 1
                continue
            p = g["params"].attrs
            arch = _text(p.get("model.arch", "?"))
            rate = float(_text(p.get("autoencoder.rate", "1")))
            e = float(g.attrs.get("energy_per_sample_j", -1))
            models.add(_text(g.attrs.get("time_model", "measured")))
            stages = []
            if "stages" in g:
                for k in sorted(g["stages"], key=int):
                    s = g["stages"][k]
                    med = {n: float(np.median(s[n][()])) if len(s[n]) else 0.0
                           for n in ("compute_s", "h2d_s", "d2h_s", "recv_wait_s", "send_wait_s")
                           if n in s}
                    med["units"] = _text(s.attrs.get("units", ""))
                    stages.append(med)
            cuts = [_text(x) for x in g["cut_names"][()]] if "cut_names" in g else []
            table[(arch, rate)] = {"throughput_sps": float(g.attrs["throughput_sps"]),
                                   "energy_per_sample_j": e if e >= 0 else None,
                                   "cut": ", ".join(cuts), "stages": stages}
    if not table:
        raise InputError(f"{path}: no completed runs ({skipped} failed or incomplete)")
    return table, skipped, models


def gains(table):
    """Rows (arch, rate, run, throughput gain %, energy gain % or None), sorted; runs without an
    R=1 baseline of the same model are left out."""
    rows = []
    for (arch, rate), run in sorted(table.items()):
        base = table.get((arch, 1.0))
        if base is None:
            continue
        tg = 100 * (run["throughput_sps"] / base["throughput_sps"] - 1)
        eg = None
        if run["energy_per_sample_j"] and base["energy_per_sample_j"]:
            eg = 100 * (base["energy_per_sample_j"] / run["energy_per_sample_j"] - 1)
        rows.append((arch, rate, run, tg, eg))
    return rows


def fmt_pct(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.1f}%"


def render(rows, skipped, time_models, path):
    out = io.StringIO()
    out.write(f"QuiltNet Fig. 5: throughput and energy-efficiency gain vs R ({path})\n")
    out.write(f"time model(s): {', '.join(sorted(time_models))}"
              + ("  (board time from the board profile)" if time_models - {"measured"} else
                 "  (wall clock of the CPU emulators: the link is shared memory)") + "\n")
    out.write(f"{'model':<16} {'cut':<22} {'R':>6} {'samples/s':>11} {'J/sample':>10} "
              f"{'tput gain':>10} {'paper':>8} {'energy gain':>12} {'paper':>8}\n")
    for arch, rate, run, tg, eg in rows:
        paper = PAPER.get((arch, rate))
        e = run["energy_per_sample_j"]
        out.write(f"{LABELS.get(arch, arch):<16} {run['cut'][:22]:<22} {rate:>6g} "
                  f"{run['throughput_sps']:>11.2f} {('-' if e is None else f'{e:.4g}'):>10} "
                  f"{fmt_pct(tg):>10} {fmt_pct(paper[0] if paper else None):>8} "
                  f"{fmt_pct(eg):>12} {fmt_pct(paper[1] if paper else None):>8}\n")
    missing = [k for k in PAPER if not any((a, r) == k for a, r, *_ in rows)]
    if missing:
        out.write("not in the results: " + ", ".join(f"{LABELS.get(a, a)} R={r:g}"
                                                      for a, r in missing) + "\n")
    if skipped:
        out.write(f"{skipped} run(s) failed or incomplete, left out\n")
    return out.getvalue()


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "cut", "rate", "throughput_sps", "energy_per_sample_j",
                    "throughput_gain_pct", "paper_throughput_gain_pct", "energy_gain_pct",
                    "paper_energy_gain_pct"])
        for arch, rate, run, tg, eg in rows:
            paper = PAPER.get((arch, rate), (None, None))
            w.writerow([arch, run["cut"], rate, run["throughput_sps"], run["energy_per_sample_j"],
                        tg, paper[0], eg, paper[1]])


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, idx, title in ((axes[0], 3, "throughput gain (%)"),
                           (axes[1], 4, "energy-efficiency gain (%)")):
        for arch in sorted({r[0] for r in rows}):
            pts = [(r[1], r[idx]) for r in rows if r[0] == arch and r[idx] is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            line, = ax.plot(xs, ys, marker="o", label=f"Quilt {LABELS.get(arch, arch)}")
            paper = [(r, v[idx - 3]) for (a, r), v in PAPER.items() if a == arch]
            if paper:
                px, py = zip(*paper)
                ax.scatter(px, py, marker="*", s=120, color=line.get_color(),
                           label=f"paper {LABELS.get(arch, arch)}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("reduction rate R")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main_for(name, default_input, make, argv=None):
    """The command line shared by the pipeline figures: `name [RESULTS] [--out-dir DIR]`.
    make(table, skipped, time_models, path) returns (text, write) or an error message (str);
    write(base) writes base.csv and base.png. Prints the text, writes base.txt. Exit code 0, or 2
    for unusable input."""
    ap = argparse.ArgumentParser(description=f"{name}: see the module docstring")
    ap.add_argument("results", nargs="?", default=default_input)
    ap.add_argument("--out-dir", help="where to write the figure and tables (default: next to "
                    "the input)")
    args = ap.parse_args(argv)
    try:
        made = make(*read_runs(args.results), args.results)
    except InputError as e:
        made = str(e)
    if isinstance(made, str):
        print(f"{name}: {made}", file=sys.stderr)
        return 2
    text, write = made
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.results))
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    with open(base + ".txt", "w") as f:
        f.write(text)
    write(base)
    print(text, end="")
    print(f"wrote {base}.png, {base}.txt, {base}.csv")
    return 0


def make_outputs(table, skipped, time_models, path):
    rows = gains(table)
    if not rows:
        return f"{path}: no model has an R=1 baseline run"

    def write(base):
        write_csv(rows, base + ".csv")
        plot(rows, base + ".png")
    return render(rows, skipped, time_models, path), write


def main(argv=None):
    return main_for("fig5_efficiency", "results/efficiency.h5", make_outputs, argv)


if __name__ == "__main__":
    sys.exit(main())
