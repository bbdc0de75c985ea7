#!/usr/bin/python3
"""Table 2 and Fig. 7 of QuiltNet (DAC 2022): a pretrained model gets an autoencoder and is
retrained on a target task with limited data, with weight freezing (phase 1 trains only the
autoencoder, phase 2 everything) and without (everything trainable from the start). The paper:
freezing wins by 0.4 (ResNet-50, 95.22% -> 95.62%), 1.9 (EfficientNet, 88.59% -> 90.52%) and 4.1
points (UNet, 88.55% -> 92.66%); Fig. 7 shows accuracy per epoch (UNet).

Verdict (quilt.verdicts, difference claim): freezing - no freezing top-1 across seeds; SHOWS when
its 95% CI lies above 0.

Reads results/weight_freezing.h5 (experiments/weight_freezing.yaml) and writes
table2_fig7_weight_freezing.png (test top-1 per epoch), .txt and .csv beside it (or in
--out-dir). Exit codes: 0 ok, 2 missing or unusable input.
"""

import common
import pandas as pd
from quilt import paper, plotting, verdicts
from quilt import results as qr

RUN = "mpirun -n 1 quilt run experiments/weight_freezing.yaml"


def body(argv):
    args, ok, left_out = common.experiment_runs(
        __doc__, argv, "weight_freezing",
        lambda runs: runs["training_mode"].isin(["freeze", "finetune"]), RUN)
    keys = [k for k in ("model.arch", "rate", "data.train_samples") if k in ok]
    ep = qr.epochs(args.results)
    rows, lines_v, groups = [], [], []
    for key, g in ok.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        f, u = g[g["training_mode"] == "freeze"], g[g["training_mode"] == "finetune"]
        if f.empty or u.empty:
            continue
        arch = key[0]
        # data.train_samples 0 = the whole training split (a limited-data sweep names its size).
        limit = str(key[2]) if len(key) > 2 else "0"
        name = f"{arch}-Quilt {key[1]:g}x" + (f" ({limit} samples)" if limit not in ("0", "") else "")
        d = common.diff_estimate(u, f, "final_top1", 100)
        conv = common.converged(ep, g["id"])
        p = paper.TABLE2.get(arch)
        rows.append({"model": name, "top1_without_pct": 100 * u["final_top1"].mean(),
                     "top1_with_pct": 100 * f["final_top1"].mean(), "gain_pt": d.mean,
                     "gain_ci_low_pt": d.low, "gain_ci_high_pt": d.high, "seeds": d.n,
                     "converged": conv,
                     "pretrained_top1_pct": 100 * f["pretrain_top1"].mean(),
                     "paper_without_pct": p[1] if p else None, "paper_with_pct": p[2] if p else None,
                     "_d": d})
        groups.append((name, g))
        paper_text = (f"{p[2] - p[1]:+.2f} pt ({p[0]})" if p else
                      f"+{paper.TABLE2_GAIN_RANGE_PT[0]} to +{paper.TABLE2_GAIN_RANGE_PT[1]} pt")
        lines_v.append(verdicts.difference(
            f"weight freezing retrains {name} to higher accuracy", d,
            p[2] - p[1] if p else paper.TABLE2_GAIN_RANGE_PT[0], "pt", paper_text, conv).line())
    if not rows:
        raise qr.InputError(f"{args.results}: needs a finished `freeze` and `finetune` run of the "
                            f"same model and rate (run: {RUN})")
    lines = ["Table 2: retraining a pretrained model with an autoencoder "
             f"({common.protocol_note(ok)})",
             f"{'model':<34} {'wo/ freezing':>12} {'w/ freezing':>12} "
             f"{'gain (mean ± 95% CI)':>34} {'pretrained':>10} {'converged':>10} | paper wo/ w/"]
    for r in rows:
        pr = r["pretrained_top1_pct"]
        pp = (f"{r['paper_without_pct']:.2f}% {r['paper_with_pct']:.2f}%"
              if r["paper_without_pct"] else "—")
        lines.append(f"{r['model']:<34} {r['top1_without_pct']:>11.2f}% "
                     f"{r['top1_with_pct']:>11.2f}% {r['_d'].text('pt'):>34} "
                     f"{common.fmt(pr, '.2f') + ('%' if pr == pr else ''):>10} "
                     f"{r['converged']:>10} | {pp}")
    lines += lines_v
    lines.append("Fig. 7: with freezing the autoencoder is trained 'carefully' first, so it may "
                 "start lower and ends higher.")
    context = common.context_lines(ok)
    lines += context + left_out
    stem = common.output_base(args.results, args.out_dir, "table2_fig7_weight_freezing")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    common.write_outputs(stem, table, "\n".join(lines) + "\n")

    fig, (ax,) = plotting.figure(1, 6.5, 4.2)
    for name, g in groups:
        for mode, style in (("freeze", "-o"), ("finetune", "--s")):
            e = ep[ep["id"].isin(g[g["training_mode"] == mode]["id"])]
            curve = e.groupby("epoch")["test_top1"].mean()
            label = "w/ weight freezing" if mode == "freeze" else "wo/ weight freezing"
            ax.plot(curve.index, 100 * curve.values, style,
                    label=label + (f" ({name})" if len(groups) > 1 else ""))
        p1 = g[g["training_mode"] == "freeze"]["id"]
        ph = ep[ep["id"].isin(p1) & (ep["phase"] == "freeze")]["epoch"]
        if len(ph):
            ax.axvline(ph.max() + 0.5, color="grey", lw=0.8, ls=":")
            ax.text(ph.max() + 0.55, 0.02, " unfreeze", color="grey", va="bottom",
                    transform=ax.get_xaxis_transform())
    return common.save_epoch_figure(fig, ax, "test top-1 accuracy (%)",
                                    "Fig. 7: weight freezing (mean over seeds)", stem, context)


main = common.script_main(__name__, "table2_fig7_weight_freezing", body)
