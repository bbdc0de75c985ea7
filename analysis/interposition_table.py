#!/usr/bin/python3
"""Table 3 of QuiltNet (DAC 2022), performance column: normalized performance of ResNet-50 with an
R=64 autoencoder after stage 1, 2 or 3 (two boards) and after every stage (four boards), each
against the same cut without autoencoder (R=1).

    normalized performance = throughput_sps(R=64) / throughput_sps(R=1), same cut(s)

Verdicts (quilt.verdicts, difference claims): the gain (normalized - 1) across runs with its 95%
CI; runs of the `modeled` time model are deterministic (degenerate interval, said so).

Reads results/interposition.h5 (experiments/interposition.yaml) and results/interposition_multi.h5
(experiments/interposition_multi.yaml), prints the table beside the paper's values and writes it
as interposition_table.txt and .csv beside the first input (or in --out-dir).
Exit codes: 0 ok, 2 missing or unusable input.
"""
import math
import os
import sys

import common
import pandas as pd
from quilt import paper, verdicts
from quilt import results as qr

EXPERIMENTS = {
    "single": ("interposition", "mpirun -n 2 quilt run experiments/interposition.yaml"),
    "multi": ("interposition_multi", "mpirun -n 4 quilt run experiments/interposition_multi.yaml"),
}
ROWS = [("Between stage 1 & 2", paper.CUTS_1, "single"),
        ("Between stage 2 & 3", paper.CUTS_2, "single"),
        ("Between stage 3 & 4", paper.CUTS_3, "single"),
        ("Multi-AE (4 boards)", paper.CUTS_ALL, "multi")]
AE_RATE = 64.0


def load(path):
    """ok pipeline runs of `path` with their cuts and rate, and the left-out lines."""
    runs = qr.runs(path)
    runs = runs[runs["training_mode"] == ""]
    ok, left = common.ok_runs(runs, path)
    # Cuts from the parameter `partition.cuts`, else (a run without it) the run's cut_names.
    given = ok["partition.cuts"] if "partition.cuts" in ok else [None] * len(ok)
    cuts = [c if isinstance(c, str) and c else n.replace(";", ",")
            for c, n in zip(given, ok["cut_names"])]
    return ok.assign(rate=common.rate_of(ok), cuts=[common.parse_cuts(c) for c in cuts]), left


def body(argv):
    ap = common.parser(__doc__, [
        ("--single", "results/interposition.h5", "result file of experiments/interposition.yaml"),
        ("--multi", "results/interposition_multi.h5",
         "result file of experiments/interposition_multi.yaml")])
    ap.add_argument("--allow-missing", action="store_true",
                    help="print the rows that can be computed when one of the files is missing")
    args = ap.parse_args(argv)
    paths = {"single": args.single, "multi": args.multi}
    missing = [k for k, p in paths.items() if not os.path.isfile(p)]
    for k in missing:
        name, command = EXPERIMENTS[k]
        print(f"interposition_table: {paths[k]} not found: run the `{name}` experiment first:\n"
              f"    {command}" + ("" if paths[k].startswith("results/") else f" --output {paths[k]}"),
              file=sys.stderr)
    if missing and (not args.allow_missing or len(missing) == len(paths)):
        return 2
    data, left = {}, []
    for k, p in paths.items():
        if k not in missing:
            data[k], l = load(p)
            left += l
    rows, lines_v, all_ok = [], [], []
    for position, cuts, k in ROWS:
        d = data.get(k)
        p = paper.TABLE3_NORM_PERF[cuts]
        if d is None:
            rows.append({"position": position, "cuts": ",".join(cuts), "boards": len(cuts) + 1,
                         "paper_normalized_perf": p, "_g": None})
            lines_v.append(verdicts.not_testable(
                f"an R=64 autoencoder {common.placement_text(position)} raises throughput",
                f"{paths[k]} is missing", f"{p:.2f}x").line())
            continue
        base, q = d[(d["cuts"] == cuts) & (d["rate"] == 1)], d[(d["cuts"] == cuts)
                                                                & (d["rate"] == AE_RATE)]
        all_ok.append(d)
        g = common.gain_estimate(base, q) if len(base) and len(q) else None
        rows.append({"position": position, "cuts": ",".join(cuts), "boards": len(cuts) + 1,
                     "throughput_r1_sps": base["throughput_sps"].mean() if len(base) else math.nan,
                     "throughput_r64_sps": q["throughput_sps"].mean() if len(q) else math.nan,
                     "normalized_perf": 1 + g.mean / 100 if g else math.nan,
                     "normalized_ci_low": 1 + g.low / 100 if g else math.nan,
                     "normalized_ci_high": 1 + g.high / 100 if g else math.nan,
                     "paper_normalized_perf": p, "runs_r1": len(base), "runs_r64": len(q), "_g": g})
        if g:
            lines_v.append(verdicts.difference(
                f"an R=64 autoencoder {common.placement_text(position)} raises throughput", g, 100 * (p - 1), "%",
                f"{p:.2f}x", "n/a (inference)", 1).line())
        else:
            lines_v.append(verdicts.not_testable(
                f"an R=64 autoencoder {common.placement_text(position)} raises throughput",
                "no completed run at R=1 and R=64 for that cut", f"{p:.2f}x").line())
    lines = ["Table 3 (QuiltNet, DAC 2022), interposition exploration: normalized performance",
             "= throughput(R=64) / throughput(R=1) at the same cut(s); paper: ResNet-50, Alveo U200"]
    lines += [f"{EXPERIMENTS[k][0]}: {paths[k]}" for k in paths if k not in missing]
    lines.append(f"{'position':<22}{'boards':>7}{'R=1 samples/s':>16}{'R=64 samples/s':>16}"
                 f"{'normalized':>12}{'paper':>8}{'runs':>7}")
    for r in rows:
        if r["_g"] is None and "throughput_r1_sps" not in r:
            lines.append(f"{r['position']:<22}{r['boards']:>7}{'—':>16}{'—':>16}{'—':>12}"
                         f"{r['paper_normalized_perf']:>8.2f}{'':>7}")
            continue
        lines.append(f"{r['position']:<22}{r['boards']:>7}{common.fmt(r['throughput_r1_sps']):>16}"
                     f"{common.fmt(r['throughput_r64_sps']):>16}"
                     f"{common.fmt(r['normalized_perf'], '.3f'):>12}"
                     f"{r['paper_normalized_perf']:>8.2f}{r['runs_r1']:>4}+{r['runs_r64']:<2}")
    lines += lines_v
    if all_ok:
        lines += common.context_lines(pd.concat(all_ok))
    lines += left
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(
        paths["single"] if "single" not in missing else paths["multi"]))
    base = common.output_base(out_dir + "/x", None, "interposition_table")
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    common.write_outputs(base, table, "\n".join(lines) + "\n")
    print(f"wrote {base}.txt and .csv", file=sys.stderr)
    return 0


main = common.script_main(__name__, "interposition_table", body)
