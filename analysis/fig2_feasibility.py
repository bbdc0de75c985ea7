#!/usr/bin/python3
"""Fig. 2 of QuiltNet (DAC 2022), the feasibility study: an MLP with two hidden layers of 512 and
a 512x autoencoder between them (one float crosses) against the baseline, trained from scratch
on four small data sets. (a) test accuracy per data set, baseline vs instrumented (the paper: on
average -0.05 points, negligible); (b) training loss per epoch (the paper: the instrumented model
may need more epochs, but converges to the baseline's level).

Verdicts (quilt.verdicts): the mean accuracy difference over the data sets is negligible when its
95% CI across seeds lies within ±NEGLIGIBLE_PT; the final training losses agree when the CI of
their difference lies within ±LOSS_MARGIN.

Reads results/feasibility.h5 (experiments/feasibility.yaml) and writes fig2_feasibility.png,
.txt and .csv beside it (or in --out-dir). Exit codes: 0 ok, 2 missing or unusable input.
"""

import common
import numpy as np
import pandas as pd
from quilt import paper, plotting, verdicts
from quilt import results as qr

NEGLIGIBLE_PT = 1.0   # equivalence margin of the accuracy difference, points
LOSS_MARGIN = 0.1     # equivalence margin of the final training-loss difference (cross-entropy)
RUN = "mpirun -n 1 quilt run experiments/feasibility.yaml"


def body(argv):
    args = common.parser(__doc__, [("results", "results/feasibility.h5",
                                    "result file of experiments/feasibility.yaml")]).parse_args(argv)
    runs = qr.runs(args.results)
    runs = runs[runs["training_mode"] != ""]
    ok, left_out = common.ok_runs(runs, f"{args.results} (run: {RUN})")
    ok = ok.assign(rate=common.rate_of(ok))
    ep = qr.epochs(args.results)
    rows, per_seed = [], {}
    for kind, g in ok.groupby("data.kind", sort=True):
        base, quilt = g[g["rate"] == 1], g[g["rate"] > 1]
        if base.empty or quilt.empty:
            continue
        d = common.diff_estimate(base, quilt, "final_top1", 100)
        dl = common.diff_estimate(base, quilt, "final_train_loss")
        # Per seed, the difference of each data set: the claims average over the data sets
        # first, then the CI runs across seeds.
        bs = dict(zip(common.seeds(base), zip(base["final_top1"], base["final_train_loss"])))
        for s, q, ql in zip(common.seeds(quilt), quilt["final_top1"], quilt["final_train_loss"]):
            if s in bs:
                per_seed.setdefault(s, []).append((100 * (q - bs[s][0]), ql - bs[s][1]))
        rows.append({"data_set": kind, "rate": quilt["rate"].iloc[0],
                     "baseline_top1_pct": 100 * base["final_top1"].mean(),
                     "quilt_top1_pct": 100 * quilt["final_top1"].mean(),
                     "diff_pt": d.mean, "diff_ci_low_pt": d.low, "diff_ci_high_pt": d.high,
                     "seeds": d.n, "baseline_final_train_loss": base["final_train_loss"].mean(),
                     "quilt_final_train_loss": quilt["final_train_loss"].mean(),
                     "loss_diff": dl.mean, "loss_diff_low": dl.low, "loss_diff_high": dl.high,
                     "converged": common.converged(ep, list(base["id"]) + list(quilt["id"])),
                     "paper_mean_diff_pt": paper.FIG2_MEAN_DIFF_PT, "_d": d, "_ids": g["id"]})
    if not rows:
        raise qr.InputError(f"{args.results}: no data set has both a baseline (R=1) and an "
                            f"instrumented run that finished (run: {RUN})")
    conv = common.converged(ep, list(ok["id"]))
    lines = ["Fig. 2a: test accuracy, MLP 512-512, baseline vs autoencoder (one float crosses; "
             f"{common.protocol_note(ok)})",
             f"{'data set':<18} {'R':>5} {'baseline':>9} {'Quilt':>9} "
             f"{'Quilt - baseline (mean ± 95% CI)':>34} {'seeds':>5} {'converged':>10}"]
    for r in rows:
        lines.append(f"{r['data_set']:<18} {r['rate']:>5g} {r['baseline_top1_pct']:>8.2f}% "
                     f"{r['quilt_top1_pct']:>8.2f}% {r['_d'].text('pt'):>34} {r['seeds']:>5} "
                     f"{r['converged']:>10}")
    complete = [v for v in per_seed.values() if len(v) == len(rows)]
    overall = verdicts.estimate([np.mean([d for d, _ in v]) for v in complete])
    lines.append(f"{'mean over data sets':<18} {'':>5} {'':>9} {'':>9} "
                 f"{overall.text('pt'):>34}   paper {paper.FIG2_MEAN_DIFF_PT:+.2f} pt")
    lines.append(verdicts.negligible(
        "the autoencoder costs negligible accuracy (mean over the data sets)", overall,
        NEGLIGIBLE_PT, f"{paper.FIG2_MEAN_DIFF_PT:+.2f} pt", "pt", conv).line())
    loss = verdicts.estimate([np.mean([dl for _, dl in v]) for v in complete])
    lines.append(verdicts.negligible(
        "the instrumented training loss converges to the baseline's level (Quilt - baseline "
        "final training loss, mean over the data sets)", loss, LOSS_MARGIN,
        "converges (Fig. 2b)", "", conv, digits=3).line())
    context = common.context_lines(ok)
    lines += context + left_out
    base = common.output_base(args.results, args.out_dir, "fig2_feasibility")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    common.write_outputs(base, table, "\n".join(lines) + "\n")

    fig, (a, b) = plotting.figure(2)
    x = np.arange(len(rows))
    for off, col, lab in ((-0.2, "baseline_top1_pct", "baseline"),
                          (0.2, "quilt_top1_pct", f"Quilt (R={rows[0]['rate']:g})")):
        a.bar(x + off, [r[col] for r in rows], 0.4, label=lab)
    a.set_xticks(x)
    a.set_xticklabels([r["data_set"] for r in rows], rotation=20)
    a.set_ylabel("test accuracy (%)")
    a.set_title("(a) prediction quality")
    plotting.legend_outside(a)
    # (b): the loss curves of the data set the paper shows (MNIST; digits is the closest here).
    pick = next((r for r in rows if r["data_set"] == "uci-digits"), rows[-1])
    e = ep[ep["id"].isin(pick["_ids"])].assign(rate=lambda d: common.rate_of(d))
    first = e.groupby("rate")["id"].first()
    for rate, rid in first.items():
        t = e[e["id"] == rid]
        label, color = ("baseline", "C0") if rate == 1 else ("Quilt", "C1")
        b.plot(t["epoch"], t["train_loss"], color=color, label=f"{label} train")
        b.plot(t["epoch"], t["test_loss"], "--", color=color, label=f"{label} test")
    plotting.epoch_axis(b)
    b.set_ylabel("cross-entropy loss")
    b.set_title(f"(b) loss over epochs, {pick['data_set']} (first seed)")
    plotting.legend_outside(b)
    return common.save_figure(fig, base, context)


main = common.script_main(__name__, "fig2_feasibility", body)
