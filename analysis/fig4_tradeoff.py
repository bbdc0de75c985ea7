#!/usr/bin/python3
"""Fig. 4 of QuiltNet (DAC 2022): (a) accuracy loss and normalized performance against the
reduction rate R, (b) the autoencoder-only reconstruction loss of f_L(x) against R, the cheap
proxy for the accuracy loss. The paper: accuracy loss 0.4 pt at R=64 for ResNet-50, rising
beyond; normalized performance 1.2x and up at R=64; the proxy's loss follows the accuracy loss;
the proxy trains 76.9x faster than the whole model.

Reads results/tradeoff.h5 (experiments/tradeoff.yaml: proxy runs per R, and scratch runs per R
with the R=1 baseline) and optionally --efficiency results/efficiency.h5 (pipeline runs per R:
normalized performance = throughput(R) / throughput(R=1) of ResNet-50, in the time model of
that file). At the small scale the two panels' curves come from different models (the training
runs' model and data vs the pipeline runs' ResNet-50): the figure says so.

Verdicts (quilt.verdicts): every effect is a difference claim across seeds (runs), SHOWS only when
its 95% CI excludes 0 on the paper's side; trends use the per-seed Spearman correlation.
Writes fig4_tradeoff.png, .txt and .csv beside the first file (or in --out-dir).
Exit codes: 0 ok, 2 missing or unusable input.
"""
import math

import common
import pandas as pd
from quilt import paper, plotting, verdicts
from quilt import results as qr

RUN = "mpirun -n 1 quilt run experiments/tradeoff.yaml"
PAPER_R = 64.0


def body(argv):
    args = common.parser(__doc__, [
        ("results", "results/tradeoff.h5", "result file of experiments/tradeoff.yaml"),
        ("--efficiency", None, "pipeline result file with an R sweep of ResNet-50 "
         "(results/efficiency.h5)")]).parse_args(argv)
    runs = qr.runs(args.results)
    runs = runs[runs["training_mode"].isin(["proxy", "scratch"])]
    ok, left_out = common.ok_runs(runs, f"{args.results} (run: {RUN})")
    ok = ok.assign(rate=common.rate_of(ok), seed=common.seeds(ok))
    proxy, scratch = ok[ok["training_mode"] == "proxy"], ok[ok["training_mode"] == "scratch"]
    if proxy.empty:
        raise qr.InputError(f"{args.results}: no finished proxy runs (run: {RUN})")
    perf = pd.DataFrame()
    if args.efficiency:
        e = qr.runs(args.efficiency)
        e = e[(e["training_mode"] == "") & (e["status"] == "ok")]
        if "model.arch" in e:
            e = e[e["model.arch"] == "resnet50"]
        e = e.assign(rate=common.rate_of(e))
        if not (e["rate"] == 1).any():
            raise qr.InputError(f"{args.efficiency}: no finished R=1 ResNet-50 pipeline run to "
                                "normalize by")
        perf = e
    base = scratch[scratch["rate"] == 1]
    ep = qr.epochs(args.results)
    conv = common.converged(ep, scratch["id"])
    rates = sorted(set(proxy["rate"]) | set(scratch["rate"][scratch["rate"] > 1])
                   | (set(perf["rate"][perf["rate"] > 1]) if len(perf) else set()))
    rows = []
    for r in rates:
        q = scratch[scratch["rate"] == r]
        loss = common.diff_estimate(q, base, "final_top1", 100) if len(q) and len(base) else None
        pr = proxy[proxy["rate"] == r]
        g = common.gain_estimate(perf[perf["rate"] == 1], perf[perf["rate"] == r]) \
            if len(perf) and (perf["rate"] == r).any() else None
        rows.append({"rate": r,
                     "accuracy_loss_pt": loss.mean if loss else math.nan,
                     "accuracy_loss_ci_low": loss.low if loss else math.nan,
                     "accuracy_loss_ci_high": loss.high if loss else math.nan,
                     "normalized_performance": 1 + g.mean / 100 if g else math.nan,
                     "proxy_reconstruction_loss": pr["final_test_loss"].mean() if len(pr)
                     else math.nan,
                     "proxy_s": pr["train_s"].mean() if len(pr) else math.nan,
                     "proxy_speedup": pr["proxy_speedup"].mean() if len(pr) else math.nan,
                     "seeds": len(q), "_loss": loss, "_gain": g})
    arch = scratch["model.arch"].iloc[0] if len(scratch) and "model.arch" in scratch else "?"
    data = scratch["dataset"].iloc[0] if len(scratch) else proxy["dataset"].iloc[0]
    lines = [f"Fig. 4: trade-off against the reduction rate R ({common.protocol_note(ok)})",
             f"accuracy loss: {paper.LABELS.get(arch, arch)} on {data} (training runs of "
             f"{args.results}); normalized performance: "
             + (f"ResNet-50 pipeline runs of {args.efficiency}" if len(perf) else "not given"),
             f"{'R':>6} {'acc. loss (mean ± 95% CI)':>36} {'norm. perf':>10} {'proxy loss':>11} "
             f"{'proxy s':>8} {'proxy vs full':>13}"]
    for r in rows:
        sp = r["proxy_speedup"]
        lines.append(f"{r['rate']:>6g} {(r['_loss'].text('pt') if r['_loss'] else '—'):>36} "
                     f"{common.fmt(r['normalized_performance'], '.3f'):>10} "
                     f"{common.fmt(r['proxy_reconstruction_loss'], '.4g'):>11} "
                     f"{common.fmt(r['proxy_s'], '.1f'):>8} "
                     f"{(common.fmt(sp, '.1f') + 'x' if sp == sp else '—'):>13}")
    at = next((r for r in rows if r["rate"] == PAPER_R), None)
    if at and at["_loss"]:
        lines.append(verdicts.difference(
            f"the autoencoder costs top-1 accuracy at R={PAPER_R:g}", at["_loss"],
            paper.FIG4_LOSS_AT_64_PT, "pt", f"{paper.FIG4_LOSS_AT_64_PT} pt loss (ResNet-50, "
            "ImageNet)", conv).line())
    else:
        lines.append(verdicts.not_testable("the autoencoder costs top-1 accuracy at R=64",
                                           "no scratch runs at R=1 and R=64",
                                           f"{paper.FIG4_LOSS_AT_64_PT} pt").line())
    if len(perf):
        tm = ", ".join(sorted(set(perf["time_model"])))
        if at and at["_gain"]:
            lines.append(verdicts.difference(
                f"the autoencoder raises pipeline throughput at R={PAPER_R:g} (ResNet-50, {tm} "
                "time model)", at["_gain"], 100 * (paper.FIG4_NORM_PERF_AT_64 - 1), "%",
                f"{paper.FIG4_NORM_PERF_AT_64}x and up on Alveo boards", "n/a (inference)",
                digits=1).line())
        else:
            lines.append(verdicts.not_testable("the autoencoder raises pipeline throughput",
                                               f"no ResNet-50 run at R={PAPER_R:g} in "
                                               f"{args.efficiency}", "1.2x and up").line())
    else:
        lines.append("Normalized performance: not given (pass --efficiency results/efficiency.h5,"
                     " the pipeline runs of experiments/efficiency.yaml).")
    # Trends: one Spearman correlation per seed, then the difference rule on them.
    rho = [verdicts.spearman(g["rate"], g["final_test_loss"]) for _, g in proxy.groupby("seed")]
    lines.append(verdicts.difference(
        "the proxy's reconstruction loss rises with R (Spearman ρ per seed)",
        verdicts.estimate(rho), 1.0, "", "rises with R", "n/a (proxy)").line())
    follow = []
    for s, g in scratch.groupby("seed"):
        b = g[g["rate"] == 1]
        p = proxy[proxy["seed"] == s]
        common_r = sorted(set(g["rate"][g["rate"] > 1]) & set(p["rate"]))
        if len(b) and len(common_r) >= 3:
            acc = [100 * (b["final_top1"].iloc[0] - g[g["rate"] == r]["final_top1"].iloc[0])
                   for r in common_r]
            follow.append(verdicts.spearman(
                [p[p["rate"] == r]["final_test_loss"].iloc[0] for r in common_r], acc))
    if follow:
        lines.append(verdicts.difference(
            "the proxy's loss follows the accuracy loss (Spearman ρ per seed)",
            verdicts.estimate(follow), 1.0, "", "follows", conv).line())
    else:
        lines.append(verdicts.not_testable(
            "the proxy's loss follows the accuracy loss", "needs scratch runs at three or more "
            "rates above 1 with an R=1 baseline, and proxy runs at those rates", "follows").line())
    sp = [g["proxy_speedup"].median() for _, g in proxy.groupby("seed")
          if g["proxy_speedup"].notna().any()]
    if sp:
        lines.append(verdicts.difference(
            "the proxy is cheaper than full training (speed-up - 1, median over R per seed)",
            verdicts.estimate([x - 1 for x in sp]), paper.FIG4_PROXY_SPEEDUP - 1, "x",
            f"{paper.FIG4_PROXY_SPEEDUP}x", "n/a (proxy)", digits=1).line())
    context = common.context_lines(ok)
    if len(perf):
        context += ["Normalized performance (pipeline runs): "
                    + common.context_lines(perf)[0][0].lower() + common.context_lines(perf)[0][1:]]
        context += [f"Two models on panel (a): accuracy loss of {paper.LABELS.get(arch, arch)} on "
                    f"{data}, normalized performance of ResNet-50 (pipeline runs)."]
    lines += context + left_out
    stem = common.output_base(args.results, args.out_dir, "fig4_tradeoff")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    common.write_outputs(stem, table, "\n".join(lines) + "\n")

    fig, (a, b) = plotting.figure(2)
    acc = [r for r in rows if not math.isnan(r["accuracy_loss_pt"])]
    if acc:
        a.errorbar([r["rate"] for r in acc], [r["accuracy_loss_pt"] for r in acc],
                   yerr=[[r["accuracy_loss_pt"] - r["accuracy_loss_ci_low"] for r in acc],
                         [r["accuracy_loss_ci_high"] - r["accuracy_loss_pt"] for r in acc]],
                   fmt="-o", color="C0", capsize=3,
                   label=f"accuracy loss, {paper.LABELS.get(arch, arch)} / {data}")
    a.set_ylabel("accuracy loss (pt)", color="C0")
    if len(perf):
        a2 = a.twinx()
        pts = [r for r in rows if not math.isnan(r["normalized_performance"])]
        a2.plot([1.0] + [r["rate"] for r in pts], [1.0] + [r["normalized_performance"]
                                                         for r in pts], "-s", color="C1",
                label="normalized performance, ResNet-50 ("
                + ", ".join(sorted(set(perf["time_model"]))) + ")")
        a2.set_ylabel("normalized performance", color="C1")
        a2.grid(False)
        h1, l1 = a.get_legend_handles_labels()
        h2, l2 = a2.get_legend_handles_labels()
        a.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.18),
                 frameon=False, ncol=1)
    else:
        plotting.legend_outside(a)
    a.set_xscale("log", base=2)
    a.set_xlabel("reduction rate R")
    a.set_title("(a) accuracy loss and performance" + (" (two models)" if len(perf) else ""))
    pr = proxy.groupby("rate")["final_test_loss"].mean()
    b.plot(pr.index, pr.values, "-o")
    b.set_xscale("log", base=2)
    b.set_xlabel("reduction rate R")
    b.set_ylabel("autoencoder-only reconstruction loss (MSE)")
    b.set_title("(b) proxy")
    return common.save_figure(fig, stem, context)


main = common.script_main(__name__, "fig4_tradeoff", body)
