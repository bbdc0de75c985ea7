#!/usr/bin/python3
"""Table 1 of QuiltNet (DAC 2022): a ResNet trained from scratch without and with the autoencoder
(the paper: ResNet-50 on ImageNet, R=64 after stage 3; top-1 error 23.85% -> 25.54%, +1.69
points; top-5 error 7.13% -> 8.10%, +0.97 points).

Verdict (quilt.verdicts, difference claim): the autoencoder adds top-1 error; SHOWS when the 95%
CI across seeds of (Quilt - baseline) top-1 error lies above 0. Top-5 is shown only for data
with more than 5 classes.

Reads results/accuracy.h5 (experiments/accuracy.yaml) and writes table1_accuracy.png (test top-1
error per epoch), .txt and .csv beside it (or in --out-dir). Exit codes: 0 ok, 2 missing or
unusable input.
"""

import common
import pandas as pd
from quilt import paper, plotting, verdicts
from quilt import results as qr

RUN = "mpirun -n 1 quilt run experiments/accuracy.yaml"


def body(argv):
    args, ok, left_out = common.experiment_runs(
        __doc__, argv, "accuracy", lambda runs: runs["training_mode"] == "scratch", RUN)
    ok = ok.assign(top1_err=1 - ok["final_top1"], top5_err=1 - ok["final_top5"])
    base = ok[ok["rate"] == 1]
    if base.empty or not (ok["rate"] > 1).any():
        raise qr.InputError(f"{args.results}: needs a finished scratch run with R=1 and one with "
                            f"R>1 (run: {RUN})")
    ep = qr.epochs(args.results)
    top5 = int(ok["classes"].max()) > 5
    arch = ok["model.arch"].iloc[0] if "model.arch" in ok else "?"
    lines = [f"Table 1: {paper.LABELS.get(arch, arch)} from scratch on {ok['dataset'].iloc[0]}, "
             f"up to {int(ok['epochs'].max())} epoch(s) run ({common.protocol_note(ok)})",
             f"{'model':<14} {'top-1 err':>10} {'Δ top-1 err (mean ± 95% CI)':>36} "
             + (f"{'top-5 err':>10} {'Δ top-5 err':>26} " if top5 else "")
             + f"{'seeds':>5} {'converged':>10} | {'paper top-1':>11}"
             + (f" {'top-5':>6}" if top5 else "")]
    rows, out_verdicts = [], []
    for rate, g in ok.groupby("rate"):
        name = "baseline" if rate == 1 else f"Quilt R={rate:g}"
        d1 = common.diff_estimate(base, g, "top1_err", 100)
        d5 = common.diff_estimate(base, g, "top5_err", 100)
        conv = common.converged(ep, g["id"])
        p = paper.TABLE1["baseline" if rate == 1 else "quilt"]
        rows.append({"model": name, "rate": rate, "top1_error_pct": 100 * g["top1_err"].mean(),
                     "delta_top1_error_pt": d1.mean if rate > 1 else 0.0,
                     "delta_top1_ci_low": d1.low if rate > 1 else None,
                     "delta_top1_ci_high": d1.high if rate > 1 else None,
                     "top5_error_pct": 100 * g["top5_err"].mean() if top5 else None,
                     "delta_top5_error_pt": d5.mean if rate > 1 and top5 else None,
                     "seeds": len(g), "converged": conv, "paper_top1_error_pct": p[0],
                     "paper_top5_error_pct": p[1]})
        lines.append(f"{name:<14} {100 * g['top1_err'].mean():>9.2f}% "
                     f"{(d1.text('pt') if rate > 1 else ''):>36} "
                     + (f"{100 * g['top5_err'].mean():>9.2f}% "
                        f"{(d5.text('pt') if rate > 1 else ''):>26} " if top5 else "")
                     + f"{len(g):>5} {conv:>10} | {p[0]:>10.2f}%"
                     + (f" {p[1]:>5.2f}%" if top5 else ""))
        if rate > 1:
            out_verdicts.append(verdicts.difference(
                f"training from scratch with the autoencoder (R={rate:g}) adds top-1 error", d1,
                paper.TABLE1_DELTA_TOP1_PT, "pt", converged=conv).line())
    if not top5:
        lines.append(f"top-5 not shown: the data has {int(ok['classes'].max())} classes (top-5 "
                     "is meaningful only above 5).")
    lines += out_verdicts
    context = common.context_lines(ok)
    lines += context + left_out
    stem = common.output_base(args.results, args.out_dir, "table1_accuracy")
    common.write_outputs(stem, pd.DataFrame(rows), "\n".join(lines) + "\n")

    fig, (ax,) = plotting.figure(1, 6.5, 4.2)
    e = ep[ep["id"].isin(ok["id"])].assign(rate=lambda d: common.rate_of(d))
    for rate, g in e.groupby("rate"):
        curve = g.groupby("epoch")["test_top1"].mean()
        ax.plot(curve.index, 100 * (1 - curve.values), marker="o",
                label=("baseline" if rate == 1 else f"Quilt R={rate:g}")
                + f" (mean of {g['id'].nunique()} run(s))")
    return common.save_epoch_figure(fig, ax, "test top-1 error (%)",
                                    "Table 1: from-scratch training", stem, context)


main = common.script_main(__name__, "table1_accuracy", body)
