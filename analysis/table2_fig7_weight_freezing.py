#!/usr/bin/python3
"""Table 2 and Fig. 7 of QuiltNet (DAC 2022): a pretrained model gets an autoencoder and is
retrained on a target task with limited data, with weight freezing (phase 1 trains only the
autoencoder, phase 2 everything) and without (everything trainable from the start). The paper:
freezing wins by 0.4 (ResNet-50, 95.22% -> 95.62%), 1.9 (EfficientNet, 88.59% -> 90.52%) and 4.1
points (UNet, 88.55% -> 92.66%); Fig. 7 shows accuracy per epoch (UNet).

Reads results/weight_freezing.h5 (experiments/weight_freezing.yaml) and writes
table2_fig7_weight_freezing.png (test top-1 per epoch), .txt and .csv beside it (or in
--out-dir). Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import training_results as tr  # noqa: E402

# Paper, Table 2: (without, with) weight freezing, top-1 accuracy in % after retraining.
PAPER = {"ResNet50-Quilt 64x": (95.22, 95.62), "UNet-Quilt 120x": (88.55, 92.66),
         "EfficientNet-Quilt 64x": (88.59, 90.52)}
RUN = "mpirun -n 1 quilt run experiments/weight_freezing.yaml"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default="results/weight_freezing.h5")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    try:
        ok, bad = tr.training_runs(args.results)
        pairs = {}
        for r in ok:
            mode = r["training"]["mode"]
            if mode in ("freeze", "finetune"):
                key = (tr.param(r, "model.arch"), tr.rate(r), tr.param(r, "data.train_samples"))
                pairs.setdefault(key, {})[mode] = r
        pairs = {k: v for k, v in pairs.items() if len(v) == 2}
        if not pairs:
            raise tr.InputError(f"{args.results}: needs a finished `freeze` and `finetune` run of "
                                f"the same model and rate (run: {RUN})")
    except tr.InputError as e:
        print(f"table2_fig7_weight_freezing: {e}", file=sys.stderr)
        return 2

    lines = ["Table 2: retraining a pretrained model with an autoencoder, limited data",
             f"{'model':<36} {'wo/ freezing':>12} {'w/ freezing':>12} {'gain':>10} "
             f"{'pretrained':>11} {'ep.1 wo/':>9} {'ep.1 w/':>9}"]
    rows = []
    for (arch, rate, n), v in sorted(pairs.items()):
        f, u = v["freeze"]["training"], v["finetune"]["training"]
        gain = 100 * (f["final_top1"] - u["final_top1"])
        name = f"{arch}-Quilt {rate:g}x ({n} samples)"
        rows.append((name, u["final_top1"], f["final_top1"], gain, f.get("pretrain_top1"),
                     u["test_top1"][0], f["test_top1"][0], v))
        lines.append(f"{name:<36} {tr.fmt_pct(u['final_top1']):>12} "
                     f"{tr.fmt_pct(f['final_top1']):>12} {tr.fmt_pt(gain):>10} "
                     f"{tr.fmt_pct(f.get('pretrain_top1')):>11} "
                     f"{tr.fmt_pct(u['test_top1'][0]):>9} {tr.fmt_pct(f['test_top1'][0]):>9}")
    lines.append("Paper (top-1 after retraining on CIFAR-10, pretrained on ImageNet):")
    for name, (wo, w) in PAPER.items():
        lines.append(f"{name:<36} {wo:>11.2f}% {w:>11.2f}% {w - wo:>+7.2f} pt")
    for name, wo, w, gain, *_ in rows:
        if gain > 0:
            verdict = (f"SHOWS for {name}: {gain:+.2f} pt"
                       + (" (inside the paper's 0.4 to 4.1 pt)" if 0.4 <= gain <= 4.1 else
                          " (outside the paper's 0.4 to 4.1 pt)"))
        else:
            verdict = f"DOES NOT SHOW for {name}: {gain:+.2f} pt"
        lines.append(f"Effect 'weight freezing retrains to higher accuracy': {verdict}.")
    lines.append("ep.1 = test top-1 after the first epoch (the paper's Fig. 7: with freezing the "
                 "autoencoder is trained 'carefully' first, so it may start lower and ends higher).")
    lines += tr.stand_in_lines(ok) + tr.failed_lines(bad)
    out = "\n".join(lines) + "\n"
    print(out, end="")
    stem = tr.output_base(args.results, args.out_dir, "table2_fig7_weight_freezing")
    tr.write_table(stem, ["model", "top1_without_freezing", "top1_with_freezing", "gain_pt",
                          "pretrained_top1", "epoch1_top1_without", "epoch1_top1_with"],
                   [r[:7] for r in rows], out)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, *_, v in rows:
        for mode, style in (("freeze", "-o"), ("finetune", "--s")):
            t = v[mode]["training"]
            label = "w/ weight freezing" if mode == "freeze" else "wo/ weight freezing"
            ax.plot(t["epoch"], 100 * t["test_top1"], style,
                    label=f"{label}" + (f" ({name})" if len(rows) > 1 else ""))
        p1 = v["freeze"]["training"].get("phase1_epochs", 0)
        if p1:
            ax.axvline(p1 + 0.5, color="grey", lw=0.8, ls=":")
            ax.text(p1 + 0.55, ax.get_ylim()[0], " unfreeze", color="grey", va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Fig. 7: weight freezing")
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=120)
    print(f"wrote {stem}.png, {stem}.txt, {stem}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
