#!/usr/bin/python3
"""What hardware produces the paper's Fig. 5 gains? Throughput gain of the autoencoder at the
paper's R over a grid of board compute rate x link bandwidth x per-transfer overhead.

For each model of Fig. 5 (ResNet-50 cut after_layer3 at R=64, UNet after_down4 at R=7.5,
EfficientNet-B0 after_features.4 at R=8), two boards, batch 1, the cost model of
partitioners/cost_model.h (the same stage times the `modeled` time model simulates) gives each
stage's busy time per batch (host->board transfer + compute + board->host transfer) and its MPI hop.
In steady state a pipeline moves one batch per max(stage busy time, hop time), so

    gain(R) = period(R=1) / period(R) - 1.

Axes:
  compute rate  effective ops/s of each board (peak x efficiency), 0.1-100 TOPS;
  link          host<->board bandwidth (H2D and D2H keep the paper's 9.2 : 11.7 ratio, the x axis
                is the H2D figure) and the board-to-board hop at the same rate, 0.1-100 GB/s;
  overhead      fixed cost of every transfer (DMA set-up, MPI latency), one panel per value.
The documented U200 point (backends/profiles/alveo-u200.yaml: 18.6 TOPS x 0.232 = 4.3 TOPS, 9.2 /
11.7 GB/s, 10 us) is marked on every panel; the shaded band is where the modeled gain is at least
the paper's (the region where the paper's number would hold).

Writes fig5_sensitivity.png, fig5_sensitivity.txt and fig5_sensitivity.csv into --out (default
results/). Runs in seconds. Needs the `quilt` Python module (PYTHONPATH=build/release/python).
Exit codes: 0 ok, 2 bad arguments or the module is missing.
"""
import argparse
import csv
import math
import os
import sys

import numpy as np

import common  # noqa: F401 (finds the quilt package)
from quilt import paper as P

# The cuts of Fig. 5 (experiments/efficiency.yaml) and the paper's R and throughput gain there.
CUTS = {"resnet50": "after_layer3", "unet": "after_down4", "efficientnet_b0": "after_features.4"}
PAPER = {arch: (cut, P.FIG6_RATE[arch], P.FIG5[(arch, P.FIG6_RATE[arch])][0])
         for arch, cut in CUTS.items()}
LABELS = P.LABELS
H2D_TO_D2H = 11.7 / 9.2  # the paper's measured D2H / H2D ratio


def import_quilt():
    import quilt
    return quilt


def model_layers(quilt, arch):
    """Units of `arch` as cost-model layers; a cut crossed by several tensors (UNet) charges
    each crossing tensor, with the shapes of the units that produce them."""
    s = quilt.summary(arch)
    layers = [dict(u) for u in s["units"]]
    for c in s["cuts"]:
        if len(c["tensors"]) > 1:
            i = next(k for k, u in enumerate(layers) if u["name"] == c["after_unit"])
            layers[i]["crossing"] = [{"name": t, "shape": sh}
                                     for t, sh in zip(c["tensors"], c["tensor_shapes"])]
    input_bytes = 4 * int(np.prod(s["input_shape"]))
    after = {c["name"]: c["after_unit"] for c in s["cuts"]}
    return after, layers, input_bytes


def period_s(quilt, layers, input_bytes, cut, rate, board):
    c = quilt.stage_costs(layers, board, [cut], batch=1, input_bytes=input_bytes, rate=rate)
    busy = [st["h2d_s"] + st["compute_s"] + st["d2h_s"] for st in c["stages"]]
    hops = [st["mpi_s"] for st in c["stages"]]
    return max(busy + hops)


def board(quilt, ops, h2d_gbps, overhead_s, kernel_overhead_s):
    return quilt.board_profile(name="grid", peak_flops=ops, efficiency=1.0,
                               overhead_s=kernel_overhead_s, h2d_gbps=h2d_gbps,
                               d2h_gbps=h2d_gbps * H2D_TO_D2H, link_latency_s=overhead_s,
                               mpi_gbps=h2d_gbps, mpi_latency_s=overhead_s)


def solve(f, lo, hi, decreasing):
    """The x in [lo, hi] (log scale) where f crosses 0, by bisection; None when f has one sign
    over the interval (returned as the string 'never' or 'always')."""
    flo, fhi = f(lo), f(hi)
    if (flo >= 0) == (fhi >= 0):
        return "always" if flo >= 0 else "never"
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if (f(mid) >= 0) == (flo >= 0):
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def fmt_need(x, unit, name):
    if isinstance(x, str):
        return {"never": "no value", "always": "any"}[x]
    return f"{x / unit:.3g} {name}"


PAPER_CUT = P.SEC34_CUT
STAGE_ENDS = {"layer1.2", "layer2.3", "layer3.5"}  # ResNet-50's stage boundaries (cut candidates)


def pick_cut(quilt, layers, input_bytes, board_, objective, stages_only):
    ls = [dict(l, cut_allowed=(l["name"] in STAGE_ENDS) if stages_only else True) for l in layers]
    r = quilt.search(ls, board_, 2, objective=objective, batch=1, input_bytes=input_bytes,
                     rate=1.0)
    return r["cut_names"][0]


def cut_choice(quilt, ops, h2d, lat, kernel, ops_grid, bw_grid):
    """Which cut each objective picks for ResNet-50 on two boards under the documented profile,
    beside the paper's, and over the grid where the paper's objective picks the paper's cut."""
    arch, want = PAPER_CUT
    after, layers, input_bytes = model_layers(quilt, arch)
    name_of = {v: k for k, v in after.items()}
    b = board(quilt, ops, h2d, lat, kernel)
    out = [f"Cut choice (§3.4), {arch} on two boards at R=1, documented U200 profile; paper: {want}"]
    for stages_only in (False, True):
        for objective in ("paper", "minmax"):
            got = name_of[pick_cut(quilt, layers, input_bytes, b, objective, stages_only)]
            verdict = "SHOWS" if got == want else "DOES NOT SHOW"
            out.append(f"  objective {objective:<6} candidates "
                       f"{'stage boundaries' if stages_only else 'every block':<16}: {got:<15} "
                       f"{verdict} (paper: {want})")
    maps = {}
    for stages_only in (False, True):
        m = np.empty((len(bw_grid), len(ops_grid)), dtype=object)
        for i, bw in enumerate(bw_grid):
            for j, o in enumerate(ops_grid):
                m[i, j] = name_of[pick_cut(quilt, layers, input_bytes, board(quilt, o, bw, lat,
                                                                               kernel),
                                           "paper", stages_only)]
        maps[stages_only] = m
        share = 100.0 * (m == want).mean()
        out.append(f"  paper objective picks {want} on {share:.0f}% of the compute x link grid "
                   f"({'stage boundaries' if stages_only else 'every block'}; "
                   f"{lat * 1e6:g} us per transfer; fig5_sensitivity_cut.png)")
    return out, maps


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Throughput gain at the paper's R over board compute rate x link bandwidth x "
                    "per-transfer overhead (cost model, steady-state pipeline), with the region "
                    "where the paper's Fig. 5 gains hold and the documented U200 point marked.")
    ap.add_argument("--out", default="results", help="output folder (default: results)")
    ap.add_argument("--points", type=int, default=25, help="grid points per axis (default: 25)")
    ap.add_argument("--overheads-us", default="1,10,100,1000",
                    help="per-transfer overheads in microseconds, one panel each "
                         "(default: 1,10,100,1000)")
    args = ap.parse_args(argv)
    if args.points < 2:
        ap.error("--points must be at least 2")
    try:
        overheads = [float(x) * 1e-6 for x in args.overheads_us.split(",")]
    except ValueError:
        ap.error("--overheads-us: comma-separated numbers, e.g. 1,10,100")
    quilt = import_quilt()
    u200_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "backends",
                             "profiles", "alveo-u200.yaml")
    doc = {}
    with open(u200_file) as f:
        for line in f:
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                doc[k.strip()] = v.strip()
    u200_ops = float(doc["peak_flops"]) * float(doc["efficiency"])
    u200_h2d = float(doc["h2d_gbps"])
    u200_lat = float(doc["link_latency_s"])
    u200_kernel = float(doc["overhead_s"])

    ops_grid = np.logspace(11, 14, args.points)   # 0.1 .. 100 TOPS
    bw_grid = np.logspace(-1, 2, args.points)     # 0.1 .. 100 GB/s
    os.makedirs(args.out, exist_ok=True)
    rows, gains = [], {}
    at_u200 = {}
    for arch, (cut, rate, _) in PAPER.items():
        after, layers, input_bytes = model_layers(quilt, arch)
        cut = after[cut]
        for ov in overheads:
            g = np.zeros((len(bw_grid), len(ops_grid)))
            for i, bw in enumerate(bw_grid):
                for j, ops in enumerate(ops_grid):
                    b = board(quilt, ops, bw, ov, u200_kernel)
                    p1 = period_s(quilt, layers, input_bytes, cut, 1.0, b)
                    pr = period_s(quilt, layers, input_bytes, cut, rate, b)
                    g[i, j] = 100.0 * (p1 / pr - 1.0)
                    rows.append((arch, rate, ops, bw, ov, g[i, j]))
            gains[(arch, ov)] = g
        b = board(quilt, u200_ops, u200_h2d, u200_lat, u200_kernel)
        at_u200[arch] = 100.0 * (period_s(quilt, layers, input_bytes, cut, 1.0, b) /
                                 period_s(quilt, layers, input_bytes, cut, rate, b) - 1.0)

    with open(os.path.join(args.out, "fig5_sensitivity.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "rate", "compute_ops_per_s", "h2d_gbps", "transfer_overhead_s",
                    "gain_percent"])
        w.writerows(rows)

    lines = ["Fig. 5 sensitivity: throughput gain at the paper's R (cost model, steady-state "
             "2-board pipeline, batch 1, board time)",
             f"documented U200 point: {u200_ops / 1e12:.2f} TOPS effective, {u200_h2d} GB/s H2D, "
             f"{u200_lat * 1e6:g} us per transfer (backends/profiles/alveo-u200.yaml)",
             "",
             "What the paper's gain needs, holding the rest at the documented U200 point:",
             f"{'model':<16} {'R':>5} {'paper':>7} {'at U200':>8} {'H2D link at most':>17} "
             f"{'compute at least':>17}"]
    for arch, (cut, rate, paper) in PAPER.items():
        after, layers, input_bytes = model_layers(quilt, arch)
        cut = after[cut]

        def gain(ops, bw):
            b = board(quilt, ops, bw, u200_lat, u200_kernel)
            return 100.0 * (period_s(quilt, layers, input_bytes, cut, 1.0, b) /
                            period_s(quilt, layers, input_bytes, cut, rate, b) - 1.0)

        bw_need = solve(lambda bw: gain(u200_ops, bw) - paper, 1e-3, 1e3, decreasing=True)
        ops_need = solve(lambda ops: gain(ops, u200_h2d) - paper, 1e9, 1e16, decreasing=False)
        lines.append(f"{LABELS[arch]:<16} {rate:>5g} {paper:>6.1f}% {at_u200[arch]:>7.1f}% "
                     f"{fmt_need(bw_need, 1.0, 'GB/s'):>17} "
                     f"{fmt_need(ops_need, 1e12, 'TOPS'):>17}")
    lines += ["", "Bytes per sample that cross a link (the gain can only come from the cut's share):"]
    for arch, (cut, rate, paper) in PAPER.items():
        s_ = quilt.summary(arch, rate=rate)
        c = next(c for c in s_["cuts"] if c["name"] == cut)
        lines.append(f"  {LABELS[arch]:<16} input {4 * int(np.prod(s_['input_shape'])):>9,} B, "
                     f"cut {c['bytes_per_sample']:>10,} B -> {c['wire_bytes_per_sample']:>9,} B "
                     f"at R={rate:g} (effective {c['effective_rate']:.3g})")
    lines += ["", "Gain over the whole grid (max over compute rate and link), per transfer overhead:"]
    for arch, (cut, rate, paper) in PAPER.items():
        parts = [f"{ov * 1e6:g} us: max {gains[(arch, ov)].max():.1f}%, paper's reached on "
                 f"{100.0 * (gains[(arch, ov)] >= paper).mean():.0f}% of the grid"
                 for ov in overheads]
        lines.append(f"  {LABELS[arch]:<16} " + "; ".join(parts))
    cut_lines, cut_maps = cut_choice(quilt, u200_ops, u200_h2d, u200_lat, u200_kernel,
                                     ops_grid, bw_grid)
    lines += [""] + cut_lines
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "fig5_sensitivity.txt"), "w") as f:
        f.write(text)
    print(text, end="")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n_m, n_o = len(PAPER), len(overheads)
    fig, axes = plt.subplots(n_m, n_o, figsize=(3.3 * n_o + 1.2, 3.0 * n_m), squeeze=False,
                             sharex=True, sharey=True)
    levels = [0, 1, 2, 5, 10, 20, 30, 50, 100, 200]
    for r, (arch, (cut, rate, paper)) in enumerate(PAPER.items()):
        for c, ov in enumerate(overheads):
            ax = axes[r][c]
            g = gains[(arch, ov)]
            cs = ax.contourf(ops_grid / 1e12, bw_grid, np.clip(g, 0, None), levels=levels,
                             cmap="viridis", extend="max")
            ax.contourf(ops_grid / 1e12, bw_grid, (g >= paper).astype(float), levels=[0.5, 1.5],
                        colors="none", hatches=["//"])
            if g.min() < paper < g.max():
                ax.contour(ops_grid / 1e12, bw_grid, g, levels=[paper], colors="red",
                           linewidths=1.2)
            ax.plot([u200_ops / 1e12], [u200_h2d], marker="*", color="white", markersize=11,
                    markeredgecolor="black")
            ax.set_xscale("log")
            ax.set_yscale("log")
            if r == 0:
                ax.set_title(f"transfer overhead {ov * 1e6:g} µs", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{LABELS[arch]} (R={rate:g})\nH2D GB/s", fontsize=9)
            if r == n_m - 1:
                ax.set_xlabel("board compute, effective TOPS", fontsize=9)
    fig.colorbar(cs, ax=axes, label="modeled throughput gain at the paper's R (%)", shrink=0.8)
    fig.suptitle("Fig. 5 sensitivity: hatched = gain ≥ paper's (red line = paper's gain), "
                 "★ = documented U200 (cost model, board time)", fontsize=10)
    png = os.path.join(args.out, "fig5_sensitivity.png")
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")

    names = sorted({n for m in cut_maps.values() for n in m.ravel()},
                   key=lambda n: list(model_layers(quilt, PAPER_CUT[0])[0]).index(n))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("tab20", len(names))
    for ax, stages_only in zip(axes[0], (False, True)):
        idx = np.vectorize(names.index)(cut_maps[stages_only]).astype(float)
        mesh = ax.pcolormesh(ops_grid / 1e12, bw_grid, idx, cmap=cmap, vmin=-0.5,
                             vmax=len(names) - 0.5, shading="nearest")
        ax.plot([u200_ops / 1e12], [u200_h2d], marker="*", color="white", markersize=12,
                markeredgecolor="black")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("board compute, effective TOPS")
        ax.set_ylabel("H2D GB/s")
        ax.set_title("candidates: " + ("ResNet stage boundaries" if stages_only else
                                       "every block"), fontsize=9)
    cb = fig.colorbar(mesh, ax=axes, ticks=range(len(names)))
    cb.ax.set_yticklabels(names)
    fig.suptitle(f"Cut the paper's balance objective picks for ResNet-50 on two boards (R=1, "
                 f"{u200_lat * 1e6:g} µs per transfer); paper: {PAPER_CUT[1]}; ★ = documented U200",
                 fontsize=9)
    png = os.path.join(args.out, "fig5_sensitivity_cut.png")
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
