#!/usr/bin/python3
"""Fig. 4 of QuiltNet (DAC 2022): (a) accuracy loss and normalized performance against the
reduction rate R, (b) the autoencoder-only reconstruction loss of f_L(x) against R, the cheap
proxy for the accuracy loss. The paper: accuracy loss 0.4% at R=64 for ResNet-50, rising beyond;
the proxy's loss follows the accuracy loss; the proxy trains 76.9x faster than the whole model.

Reads results/tradeoff.h5 (experiments/tradeoff.yaml: proxy runs per R, and scratch runs per R
with the R=1 baseline) and optionally --efficiency results/efficiency.h5 (pipeline runs per R:
normalized performance = throughput(R) / throughput(R=1); these are the `measured` time model's
results of this machine unless the file says otherwise). Writes fig4_tradeoff.png, .txt and .csv
beside the first file (or in --out-dir). Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import training_results as tr  # noqa: E402

PAPER_SPEEDUP = 76.9      # autoencoder-only training vs entire model training, ResNet-50
PAPER_LOSS_AT_64 = 0.4    # accuracy loss in points at R=64, ResNet-50
RUN = "mpirun -n 1 quilt run experiments/tradeoff.yaml"


def normalized_performance(path, arch="resnet50"):
    """R -> throughput(R) / throughput(R=1) from the pipeline runs of `arch` in `path` (median
    per R; files without model.arch in the parameters count as that model), and the time models
    of those runs."""
    runs = [r for r in tr.read_runs(path) if r["training"] is None and r["status"] == "ok"
            and r["params"].get("model.arch", arch) == arch]
    normalized_performance.time_models = {r["time_model"] for r in runs}
    by_rate = {}
    for r in runs:
        by_rate.setdefault(tr.rate(r), []).append(r["throughput_sps"])
    if 1.0 not in by_rate:
        raise tr.InputError(f"{path}: no finished R=1 pipeline run to normalize by")
    base = float(np.median(by_rate[1.0]))
    return {k: float(np.median(v)) / base for k, v in sorted(by_rate.items())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default="results/tradeoff.h5")
    ap.add_argument("--efficiency", default=None,
                    help="pipeline result file with an R sweep (e.g. results/efficiency.h5)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    try:
        proxy, bad_p = tr.training_runs(args.results, mode="proxy")
        scratch, bad_s = tr.training_runs(args.results, mode="scratch")
        if not proxy:
            raise tr.InputError(f"{args.results}: no finished proxy runs (run: {RUN})")
        perf = normalized_performance(args.efficiency) if args.efficiency else {}
    except tr.InputError as e:
        print(f"fig4_tradeoff: {e}", file=sys.stderr)
        return 2

    proxy_loss = {tr.rate(r): r["training"]["final_test_loss"] for r in proxy}
    speedup = {tr.rate(r): r["training"].get("proxy_speedup", -1) for r in proxy}
    proxy_s = {tr.rate(r): r["training"].get("train_s", float("nan")) for r in proxy}
    base = [r for r in scratch if tr.rate(r) == 1]
    acc_loss = {}
    if base:
        b = base[0]["training"]["final_top1"]
        acc_loss = {tr.rate(r): 100 * (b - r["training"]["final_top1"]) for r in scratch
                    if tr.rate(r) > 1}
    rates = sorted(set(proxy_loss) | set(acc_loss) | {k for k in perf if k > 1})
    nan = float("nan")
    rows = [(r, acc_loss.get(r, nan), perf.get(r, nan), proxy_loss.get(r, nan),
             proxy_s.get(r, nan), speedup.get(r, nan)) for r in rates]
    lines = ["Fig. 4: trade-off against the reduction rate R",
             f"{'R':>6} {'acc. loss':>10} {'norm. perf':>10} {'proxy loss':>11} {'proxy s':>8} "
             f"{'proxy vs full':>13}"]
    for r, a, p, l, s, sp in rows:
        lines.append(f"{r:>6g} {tr.fmt_pt(a):>10} {('-' if math.isnan(p) else f'{p:.3f}'):>10} "
                     f"{('-' if math.isnan(l) else f'{l:.4g}'):>11} "
                     f"{('-' if math.isnan(s) else f'{s:.1f}'):>8} "
                     f"{('-' if math.isnan(sp) or sp <= 0 else f'{sp:.1f}x'):>13}")
    lines.append(f"Paper (ResNet-50, ImageNet): accuracy loss {PAPER_LOSS_AT_64} pt at R=64, "
                 f"rising beyond; autoencoder-only training {PAPER_SPEEDUP}x faster than the "
                 "entire model.")
    if perf:
        best = max((k for k in perf if k > 1), key=lambda k: perf[k], default=None)
        if best is not None:
            models = getattr(normalized_performance, "time_models", set())
            why = ("board time of the alveo-u200 profile (" + ", ".join(sorted(models)) + ")"
                   if models - {"measured"} else
                   "on a CPU emulator with the measured time model, tensors cross in shared "
                   "memory, so there is little communication to save")
            lines.append("Effect 'the autoencoder raises pipeline performance' (paper: 1.2x and up "
                         "at R=64 on Alveo boards over PCIe): "
                         + ("SHOWS" if perf[best] > 1 else "DOES NOT SHOW")
                         + f" in the efficiency file for ResNet-50 (best {perf[best]:.3f}x at "
                         f"R={best:g}; {why}).")
    if not perf:
        lines.append("Normalized performance: not given (pass --efficiency results/efficiency.h5,"
                     " the pipeline runs of experiments/efficiency.yaml).")
    pr = sorted(proxy_loss)
    rho = tr.spearman(pr, [proxy_loss[r] for r in pr])
    lines.append("Effect 'the proxy's reconstruction loss rises with R': "
                 + (f"SHOWS (Spearman {rho:+.2f} over {len(pr)} rates)." if rho > 0.8 else
                    f"DOES NOT SHOW (Spearman {rho:+.2f} over {len(pr)} rates)."))
    common = [r for r in pr if r in acc_loss]
    if len(common) >= 3:
        rho2 = tr.spearman([proxy_loss[r] for r in common], [acc_loss[r] for r in common])
        lines.append("Effect 'the proxy's loss follows the accuracy loss': "
                     + ("SHOWS" if rho2 > 0.5 else "DOES NOT SHOW")
                     + f" (Spearman {rho2:+.2f} over R = {', '.join(f'{r:g}' for r in common)}).")
    else:
        lines.append("Effect 'the proxy's loss follows the accuracy loss': not testable (needs "
                     "scratch runs at three or more rates above 1 and an R=1 baseline).")
    sps = [s for s in speedup.values() if s > 0]
    if sps:
        med = float(np.median(sps))
        lines.append(f"Effect 'the proxy is much cheaper than full training': "
                     f"{'SHOWS' if med > 1 else 'DOES NOT SHOW'} (median {med:.1f}x here, paper "
                     f"{PAPER_SPEEDUP}x; the ratio grows with the share of the model after the "
                     "cut and with the data size).")
    lines += tr.stand_in_lines(proxy + scratch) + tr.failed_lines(bad_p + bad_s)
    out = "\n".join(lines) + "\n"
    print(out, end="")
    stem = tr.output_base(args.results, args.out_dir, "fig4_tradeoff")
    tr.write_table(stem, ["rate", "accuracy_loss_pt", "normalized_performance",
                          "proxy_reconstruction_loss", "proxy_s", "proxy_speedup"], rows, out)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if acc_loss:
        ks = sorted(acc_loss)
        a.plot(ks, [acc_loss[k] for k in ks], "-o", color="C0", label="accuracy loss")
        a.set_ylabel("accuracy loss (pt)", color="C0")
    if perf:
        a2 = a.twinx()
        ks = sorted(perf)
        a2.plot(ks, [perf[k] for k in ks], "-s", color="C1", label="normalized performance")
        a2.set_ylabel("normalized performance", color="C1")
    a.set_xscale("log", base=2)
    a.set_xlabel("reduction rate R")
    a.set_title("(a) accuracy loss and performance")
    b.plot(pr, [proxy_loss[r] for r in pr], "-o")
    b.set_xscale("log", base=2)
    b.set_xlabel("reduction rate R")
    b.set_ylabel("autoencoder-only reconstruction loss (MSE)")
    b.set_title("(b) proxy")
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=120)
    print(f"wrote {stem}.png, {stem}.txt, {stem}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
