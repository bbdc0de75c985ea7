#!/usr/bin/python3
"""Table 3 of QuiltNet (DAC 2022), accuracy column: ResNet-50 on CIFAR-10 without autoencoder
(96.05%) and with an R=64 autoencoder between stage 1 & 2 (95.91%), 2 & 3 (95.62%), 3 & 4
(95.58%) and after every stage (multi-AE, 95.46%): a low accuracy loss wherever it goes, a
little more the later it goes and with several. The normalized-performance column is
interposition_table.py's.

Reads results/interposition_accuracy.h5 (experiments/interposition_accuracy.yaml) and writes
table3_interposition_accuracy.txt and .csv beside it (or in --out-dir).
Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import sys

import training_results as tr

PAPER = {(): 96.05, ("after_layer1",): 95.91, ("after_layer2",): 95.62,
         ("after_layer3",): 95.58, ("after_layer1", "after_layer2", "after_layer3"): 95.46}
ROWS = [("ResNet wo/ autoencoder", ()), ("Between stage 1 & 2", ("after_layer1",)),
        ("Between stage 2 & 3", ("after_layer2",)), ("Between stage 3 & 4", ("after_layer3",)),
        ("Multi-AE", ("after_layer1", "after_layer2", "after_layer3"))]
RUN = "mpirun -n 1 quilt run experiments/interposition_accuracy.yaml"


def cuts(run):
    t = run["params"].get("partition.cuts", "[]").strip().strip("[]")
    return tuple(c.strip().strip("'\"") for c in t.split(",") if c.strip())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default="results/interposition_accuracy.h5")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    try:
        ok, bad = tr.training_runs(args.results, mode="scratch")
        found = {}
        for r in ok:
            found[() if tr.rate(r) == 1 else cuts(r)] = r["training"]["final_top1"]
        if () not in found:
            raise tr.InputError(f"{args.results}: no finished baseline (R=1) run (run: {RUN})")
    except tr.InputError as e:
        print(f"table3_interposition_accuracy: {e}", file=sys.stderr)
        return 2
    lines = ["Table 3 (accuracy): R=64 autoencoder placement",
             f"{'placement':<24} {'Quilt top-1':>11} {'vs base':>10} | {'paper':>7} {'vs base':>8}"]
    rows = []
    for name, key in ROWS:
        acc = found.get(key)
        loss = None if acc is None or key == () else 100 * (found[()] - acc)
        p = PAPER[key]
        rows.append((name, "" if acc is None else acc, "" if loss is None else loss, p,
                     p - PAPER[()] if key else 0.0))
        lines.append(f"{name:<24} {tr.fmt_pct(acc) if acc is not None else 'not run':>11} "
                     f"{tr.fmt_pt(-loss) if loss is not None else '':>10} | {p:>6.2f}% "
                     f"{(p - PAPER[()]) if key else 0:>+7.2f}")
    losses = [r[2] for r in rows[1:] if r[2] != ""]
    if losses:
        worst = max(losses)
        lines.append("Effect 'low accuracy loss wherever the autoencoder goes' (paper: at most "
                     f"0.59 pt): {'SHOWS' if worst <= 3 else 'DOES NOT SHOW'} here (worst "
                     f"{worst:.2f} pt; low = at most 3 pt at this scale).")
    lines += tr.stand_in_lines(ok) + tr.failed_lines(bad)
    out = "\n".join(lines) + "\n"
    print(out, end="")
    stem = tr.output_base(args.results, args.out_dir, "table3_interposition_accuracy")
    tr.write_table(stem, ["placement", "top1", "accuracy_loss_pt", "paper_top1",
                          "paper_delta_pt"], rows, out)
    print(f"wrote {stem}.txt, {stem}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
