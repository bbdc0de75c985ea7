#!/usr/bin/python3
"""Figure 5 of QuiltNet (DAC 2022): throughput and energy-efficiency gain against the reduction
rate R, for each model cut in two with an autoencoder at the cut, on two boards.

    throughput gain        = throughput_sps(R) / throughput_sps(R=1) - 1      (same model, same cut)
    energy-efficiency gain = energy_per_sample_j(R=1) / energy_per_sample_j(R) - 1

The x axis is the effective rate (bytes without / bytes with the autoencoder): where ceil(C/R)
channels make it differ from the requested R (EfficientNet-B0 64/120/128 run at 40/80/80, UNet
120 at 68.9), the point is plotted at the effective rate and annotated with the requested one.
The paper's points are matched by requested R.

Verdicts (quilt.verdicts, difference claims): per paper point, the gain's mean across runs with
its 95% CI; runs of the `modeled` time model are deterministic, so their interval is degenerate
and the line says so.

Reads results/efficiency.h5 (experiments/efficiency.yaml), writes fig5_efficiency.png, .txt and
.csv beside it (or in --out-dir). Failed runs are left out and listed. Exit codes: 0 ok, 2
missing or unusable input.
"""
import math

import common
import pandas as pd
from quilt import paper, plotting, verdicts
from quilt import results as qr


def gains(ok):
    """Rows per (model, requested R) with a baseline of the same model: gains and estimates."""
    rows = []
    for (arch, rate), g in ok.groupby(["model.arch", "rate"]):
        base = ok[(ok["model.arch"] == arch) & (ok["rate"] == 1)]
        if base.empty:
            continue
        tg = common.gain_estimate(base, g)
        inv = lambda d: d.assign(eff=1 / d["energy_per_sample_j"])  # noqa: E731
        has_e = g["energy_per_sample_j"].notna().all() and base["energy_per_sample_j"].notna().all()
        eg = common.gain_estimate(inv(base), inv(g), "eff") if has_e else None
        p = paper.FIG5.get((arch, float(rate)))
        rows.append({"model": arch, "cut": g["cut_names"].iloc[0], "rate": rate,
                     "effective_rate": g["effective_rate"].mean(), "runs": len(g),
                     "throughput_sps": g["throughput_sps"].mean(),
                     "energy_per_sample_j": g["energy_per_sample_j"].mean(),
                     "throughput_gain_pct": tg.mean, "paper_throughput_gain_pct": p[0] if p else None,
                     "energy_gain_pct": eg.mean if eg else math.nan,
                     "paper_energy_gain_pct": p[1] if p else None,
                     "time_model": ", ".join(sorted(set(g["time_model"]))), "_tg": tg, "_eg": eg})
    return rows


def body(argv):
    args = common.parser(__doc__, [("results", "results/efficiency.h5",
                                    "result file of experiments/efficiency.yaml")]).parse_args(argv)
    runs = qr.runs(args.results)
    runs = runs[runs["training_mode"] == ""]
    ok, left_out = common.ok_runs(
        runs, f"{args.results} (run: mpirun -n 2 quilt run experiments/efficiency.yaml)")
    ok = ok.assign(rate=common.rate_of(ok))
    if "model.arch" not in ok:
        ok = ok.assign(**{"model.arch": "?"})
    rows = gains(ok)
    if not rows:
        raise qr.InputError(f"{args.results}: no model has an R=1 baseline run")
    context = common.context_lines(ok)
    lines = [f"QuiltNet Fig. 5: throughput and energy-efficiency gain vs R ({args.results})",
             f"{'model':<16} {'cut':<16} {'R':>5} {'eff. R':>7} {'samples/s':>10} {'J/sample':>10} "
             f"{'tput gain':>10} {'paper':>7} {'energy gain':>12} {'paper':>7}"]
    pct = lambda x: common.fmt(x, "+.1f") + ("%" if x is not None and x == x else "")  # noqa
    for r in rows:
        mark = "*" if abs(r["effective_rate"] - r["rate"]) > 1e-6 * r["rate"] else " "
        lines.append(f"{paper.LABELS.get(r['model'], r['model']):<16} {str(r['cut'])[:16]:<16} "
                     f"{r['rate']:>5g} {r['effective_rate']:>6.3g}{mark} "
                     f"{r['throughput_sps']:>10.2f} {common.fmt(r['energy_per_sample_j'], '.4g'):>10} "
                     f"{pct(r['throughput_gain_pct']):>10} {pct(r['paper_throughput_gain_pct']):>7} "
                     f"{pct(r['energy_gain_pct']):>12} {pct(r['paper_energy_gain_pct']):>7}")
    if any(abs(r["effective_rate"] - r["rate"]) > 1e-6 * r["rate"] for r in rows):
        lines.append("* effective rate differs from the requested R (ceil(C/R) channels cross); "
                     "the figure plots the effective rate.")
    for (arch, rate), (pt, pe) in paper.FIG5.items():
        r = next((x for x in rows if x["model"] == arch and x["rate"] == rate), None)
        name = f"{paper.LABELS.get(arch, arch)} R={rate:g}"
        if r is None:
            lines.append(verdicts.not_testable(f"Quilt raises {name}'s throughput",
                                               "not in the results", f"{pt:+.1f}%").line())
            continue
        lines.append(verdicts.difference(f"Quilt raises {name}'s throughput", r["_tg"], pt, "%",
                                         f"{pt:+.1f}%", "n/a (inference)", 1).line())
        if r["_eg"] is not None:
            lines.append(verdicts.difference(f"Quilt raises {name}'s energy efficiency", r["_eg"],
                                             pe, "%", f"{pe:+.1f}%", "n/a (inference)", 1).line())
    lines += context + left_out
    base = common.output_base(args.results, args.out_dir, "fig5_efficiency")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    common.write_outputs(base, table, "\n".join(lines) + "\n")

    fig, axes = plotting.figure(2, 5.0, 4.5)
    for ax, col, pcol, title in ((axes[0], "throughput_gain_pct", 0, "throughput gain (%)"),
                                 (axes[1], "energy_gain_pct", 1, "energy-efficiency gain (%)")):
        for i, arch in enumerate(sorted({r["model"] for r in rows})):
            color = plotting.COLORS[i % len(plotting.COLORS)]
            pts = sorted((r["effective_rate"], r[col], r["rate"]) for r in rows
                         if r["model"] == arch and r[col] == r[col])
            if not pts:
                continue
            label = paper.LABELS.get(arch, arch)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=color,
                    label=f"Quilt {label}")
            same = [p for p in pts if abs(p[0] - p[2]) <= 1e-6 * p[2]]
            moved = [p for p in pts if abs(p[0] - p[2]) > 1e-6 * p[2]]
            ax.plot([p[0] for p in same], [p[1] for p in same], "o", color=color)
            ax.plot([p[0] for p in moved], [p[1] for p in moved], "o", mfc="white", color=color)
            # One note per plotted point whose requested R differs (several R can land on one).
            notes = {}
            for eff, y, req in moved:
                notes.setdefault((round(eff, 3), y), []).append(req)
            for (eff, y), reqs in notes.items():
                ax.annotate("R=" + ",".join(f"{q:g}" for q in reqs) + f"→{eff:.3g}", (eff, y),
                            fontsize=6, color=color, textcoords="offset points", xytext=(2, -9))
            pp = [(r, v[pcol]) for (a, r), v in paper.FIG5.items() if a == arch]
            if pp:
                ax.scatter([p[0] for p in pp], [p[1] for p in pp], marker="*", s=110, color=color,
                           label=f"paper {label}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("effective reduction rate")
        ax.set_title(title)
    marks = [plotting.plt.Line2D([], [], marker="o", ls="", color="0.3", label="R as requested"),
             plotting.plt.Line2D([], [], marker="o", ls="", mfc="white", color="0.3",
                                 label="effective R ≠ requested\n(annotated R=req→eff)"),
             plotting.plt.Line2D([], [], marker="*", ls="", ms=10, color="0.3",
                                 label="paper (at requested R)")]
    h, l = axes[1].get_legend_handles_labels()
    plotting.legend_outside(axes[1], h + marks, l + [m.get_label() for m in marks])
    return common.save_figure(fig, base, context)


main = common.script_main(__name__, "fig5_efficiency", body)
