#!/usr/bin/python3
"""Table 3 of QuiltNet (DAC 2022), accuracy column: ResNet-50 on CIFAR-10 without autoencoder
(96.05%) and with an R=64 autoencoder between stage 1 & 2 (95.91%), 2 & 3 (95.62%), 3 & 4
(95.58%) and after every stage (multi-AE, 95.46%): a low accuracy loss wherever it goes. The
normalized-performance column is interposition_table.py's.

Verdict (quilt.verdicts, negligible claim): per placement, the accuracy loss (baseline - Quilt
top-1) across seeds is low when its 95% CI lies at or below LOW_LOSS_PT.

Reads results/interposition_accuracy.h5 (experiments/interposition_accuracy.yaml) and writes
table3_interposition_accuracy.txt and .csv beside it (or in --out-dir).
Exit codes: 0 ok, 2 missing or unusable input.
"""

import common
import pandas as pd
from quilt import paper, verdicts
from quilt import results as qr

LOW_LOSS_PT = 1.0  # "low accuracy loss": at most this many points (the paper's worst: 0.59)
RUN = "mpirun -n 1 quilt run experiments/interposition_accuracy.yaml"


def body(argv):
    args, ok, left_out = common.experiment_runs(
        __doc__, argv, "interposition_accuracy",
        lambda runs: runs["training_mode"] == "scratch", RUN)
    cuts = (ok["partition.cuts"] if "partition.cuts" in ok else ok["cut_names"]).map(
        common.parse_cuts)
    ok = ok.assign(placement=[() if r == 1 else c for r, c in zip(ok["rate"], cuts)])
    base = ok[ok["placement"] == ()]
    if base.empty:
        raise qr.InputError(f"{args.results}: no finished baseline (R=1) run (run: {RUN})")
    ep = qr.epochs(args.results)
    lines = [f"Table 3 (accuracy): R=64 autoencoder placement ({common.protocol_note(ok)})",
             f"{'placement':<22} {'Quilt top-1':>11} {'loss vs base (mean ± 95% CI)':>36} "
             f"{'seeds':>5} {'converged':>10} | {'paper':>7} {'loss':>6}"]
    rows, lines_v = [], []
    b_conv = common.converged(ep, base["id"])
    lines.append(f"{'ResNet wo/ autoencoder':<22} {100 * base['final_top1'].mean():>10.2f}% "
                 f"{'':>36} {len(base):>5} {b_conv:>10} | {paper.TABLE3_TOP1[()]:>6.2f}%")
    rows.append({"placement": "ResNet wo/ autoencoder", "top1_pct": 100 * base["final_top1"].mean(),
                 "seeds": len(base), "converged": b_conv, "paper_top1_pct": paper.TABLE3_TOP1[()]})
    for name, key in paper.TABLE3_ROWS:
        g = ok[ok["placement"] == key]
        p = paper.TABLE3_TOP1[key]
        ploss = paper.TABLE3_TOP1[()] - p
        if g.empty:
            lines.append(f"{name:<22} {'not run':>11} {'':>36} {'':>5} {'':>10} | {p:>6.2f}% "
                         f"{ploss:>5.2f}")
            continue
        d = common.diff_estimate(g, base, "final_top1", 100)  # baseline - Quilt: the loss
        conv = common.converged(ep, list(g["id"]) + list(base["id"]))
        rows.append({"placement": name, "top1_pct": 100 * g["final_top1"].mean(),
                     "accuracy_loss_pt": d.mean, "loss_ci_low_pt": d.low,
                     "loss_ci_high_pt": d.high, "seeds": d.n, "converged": conv,
                     "paper_top1_pct": p, "paper_loss_pt": ploss})
        lines.append(f"{name:<22} {100 * g['final_top1'].mean():>10.2f}% {d.text('pt'):>36} "
                     f"{d.n:>5} {conv:>10} | {p:>6.2f}% {ploss:>5.2f}")
        lines_v.append(verdicts.negligible(
            f"low accuracy loss with the autoencoder {common.placement_text(name)}", d, (None, LOW_LOSS_PT),
            f"{ploss:.2f} pt loss", "pt", conv).line())
    lines += lines_v + common.context_lines(ok) + left_out
    stem = common.output_base(args.results, args.out_dir, "table3_interposition_accuracy")
    common.write_outputs(stem, pd.DataFrame(rows), "\n".join(lines) + "\n")
    print(f"wrote {stem}.txt, {stem}.csv")
    return 0


main = common.script_main(__name__, "table3_interposition_accuracy", body)
