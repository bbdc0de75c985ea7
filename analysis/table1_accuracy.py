#!/usr/bin/python3
"""Table 1 of QuiltNet (DAC 2022): a ResNet trained from scratch without and with the autoencoder
(the paper: ResNet-50 on ImageNet, R=64 after stage 3; top-1 error 23.85% -> 25.54%, +1.69
points; top-5 error 7.13% -> 8.10%, +0.97 points).

Reads results/accuracy.h5 (experiments/accuracy.yaml) and writes table1_accuracy.png (test top-1
per epoch), table1_accuracy.txt and table1_accuracy.csv beside it (or in --out-dir).
Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import training_results as tr  # noqa: E402

PAPER = {"baseline": (23.85, 7.13), "quilt": (25.54, 8.10)}  # top-1, top-5 error in %
# "Small cost" at this scale: the autoencoder adds at most this many points of top-1 error.
SMALL_PT = 3.0
RUN = "mpirun -n 1 quilt run experiments/accuracy.yaml"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default="results/accuracy.h5")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    try:
        ok, bad = tr.training_runs(args.results, mode="scratch")
        base = [r for r in ok if tr.rate(r) == 1]
        quilt = sorted((r for r in ok if tr.rate(r) > 1), key=tr.rate)
        if not base or not quilt:
            raise tr.InputError(f"{args.results}: needs a finished scratch run with R=1 and one "
                                f"with R>1 (run: {RUN})")
    except tr.InputError as e:
        print(f"table1_accuracy: {e}", file=sys.stderr)
        return 2
    b = base[0]["training"]
    rows = [("baseline", 1.0, 1 - b["final_top1"], 1 - b["final_top5"], 0.0, 0.0)]
    for q in quilt:
        t = q["training"]
        rows.append((f"Quilt R={tr.rate(q):g}", tr.rate(q), 1 - t["final_top1"],
                     1 - t["final_top5"], 100 * (b["final_top1"] - t["final_top1"]),
                     100 * (b["final_top5"] - t["final_top5"])))
    lines = [f"Table 1: {tr.param(base[0], 'model.arch')} from scratch on "
             f"{b.get('dataset', '?')}, {len(b['epoch'])} epoch(s)",
             f"{'model':<16} {'top-1 err':>10} {'top-5 err':>10} {'d top-1':>10} {'d top-5':>10}"
             f" | {'paper top-1':>11} {'paper top-5':>11}"]
    for i, (name, _, e1, e5, d1, d5) in enumerate(rows):
        p = PAPER["baseline" if i == 0 else "quilt"]
        lines.append(f"{name:<16} {tr.fmt_pct(e1):>10} {tr.fmt_pct(e5):>10} "
                     f"{tr.fmt_pt(d1) if i else '':>10} {tr.fmt_pt(d5) if i else '':>10} | "
                     f"{p[0]:>10.2f}% {p[1]:>10.2f}%")
    lines.append("Paper: ResNet-50 on ImageNet, R=64 after stage 3: +1.69 pt top-1 error, "
                 "+0.97 pt top-5 error.")
    for name, rate, _, _, d1, _ in rows[1:]:
        if d1 <= SMALL_PT:
            verdict = (f"SHOWS at R={rate:g}: {d1:+.2f} pt top-1 error" +
                       (" (no cost at all here: the instrumented model is as good or better)"
                        if d1 <= 0 else ""))
        else:
            verdict = f"DOES NOT SHOW at R={rate:g}: {d1:+.2f} pt top-1 error (> {SMALL_PT:g} pt)"
        lines.append(f"Effect 'training from scratch with the autoencoder costs little top-1 "
                     f"accuracy': {verdict}.")
    if len(b["epoch"]) < 10:
        lines.append(f"Caveat: {len(b['epoch'])} epoch(s) is far from converged training (paper: "
                     "90 epochs); differences of a point are within run-to-run noise here.")
    lines += tr.stand_in_lines(ok) + tr.failed_lines(bad)
    out = "\n".join(lines) + "\n"
    print(out, end="")
    stem = tr.output_base(args.results, args.out_dir, "table1_accuracy")
    tr.write_table(stem, ["model", "rate", "top1_error", "top5_error", "delta_top1_error_pt",
                          "delta_top5_error_pt", "paper_top1_error", "paper_top5_error"],
                   [(n, r, e1, e5, d1, d5, *PAPER["baseline" if i == 0 else "quilt"])
                    for i, (n, r, e1, e5, d1, d5) in enumerate(rows)], out)
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in base[:1] + quilt:
        t = run["training"]
        ax.plot(t["epoch"], 100 * (1 - t["test_top1"]), marker="o",
                label="baseline" if tr.rate(run) == 1 else f"Quilt R={tr.rate(run):g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title("Table 1: from-scratch training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=120)
    print(f"wrote {stem}.png, {stem}.txt, {stem}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
