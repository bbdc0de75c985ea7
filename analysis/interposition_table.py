#!/usr/bin/python3
"""Table 3 of QuiltNet (DAC 2022), performance column: normalized performance of ResNet-50 with an
R=64 autoencoder after stage 1, 2 or 3 (two boards) and after every stage (four boards), each
against the same cut without autoencoder (R=1).

    normalized performance = throughput_sps(R=64) / throughput_sps(R=1), same cut(s)

Reads results/interposition.h5 (experiments/interposition.yaml) and results/interposition_multi.h5
(experiments/interposition_multi.yaml), prints the table beside the paper's values and writes it
as interposition_table.txt and interposition_table.csv next to the first input file.
Run with /usr/bin/python3 (needs h5py and numpy). Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import csv
import io
import math
import os
import sys

import h5py
import numpy as np

# Paper, Table 3 ("Normalized Perf." column), ResNet-50 on CIFAR-10, Alveo U200 boards.
PAPER = {
    ("after_layer1",): 1.22,  # between stage 1 & 2
    ("after_layer2",): 1.26,  # between stage 2 & 3
    ("after_layer3",): 1.31,  # between stage 3 & 4
    ("after_layer1", "after_layer2", "after_layer3"): 1.44,  # Multi-AE, four boards
}
ROWS = [
    ("Between stage 1 & 2", ("after_layer1",), "single"),
    ("Between stage 2 & 3", ("after_layer2",), "single"),
    ("Between stage 3 & 4", ("after_layer3",), "single"),
    ("Multi-AE (4 boards)", ("after_layer1", "after_layer2", "after_layer3"), "multi"),
]
EXPERIMENTS = {
    "single": ("interposition", "mpirun -n 2 quilt run experiments/interposition.yaml"),
    "multi": ("interposition_multi", "mpirun -n 4 quilt run experiments/interposition_multi.yaml"),
}
BASE_RATE, AE_RATE = 1.0, 64.0


class InputError(Exception):
    """A result file is missing or does not hold what the table needs."""


def parse_cuts(text):
    """'[after_layer1, after_layer2]', 'after_layer1' or '["a", "b"]' -> ('after_layer1', ...)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return tuple(p.strip().strip("'\"") for p in text.split(",") if p.strip())


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


# Time models of the runs read (results/SCHEMA.md `time_model`), for the table's header.
TIME_MODELS = set()


def read_runs(path):
    """(cuts, rate) -> list of throughput_sps of the runs that completed with status ok, and the
    number of runs skipped (failed or incomplete). Cuts come from params `partition.cuts`, or the
    run's `cut_names` dataset when the parameter is absent."""
    table, skipped = {}, 0
    with h5py.File(path, "r") as f:
        if f.attrs.get("quilt_format") not in ("quilt-results", b"quilt-results"):
            raise InputError(f"{path}: not a Quilt result file (no quilt_format attribute)")
        runs = f.get("runs")
        if runs is None:
            raise InputError(f"{path}: has no /runs group")
        order = [_text(x) for x in f["run_order"][()]] if "run_order" in f else sorted(runs)
        for run_id in order:
            g = runs[run_id]
            if _text(g.attrs.get("status", "")) != "ok" or int(g.attrs.get("complete", 0)) != 1:
                skipped += 1
                continue
            params = g["params"].attrs if "params" in g else {}
            if "partition.cuts" in params:
                cuts = parse_cuts(_text(params["partition.cuts"]))
            elif "cut_names" in g:
                cuts = tuple(_text(x) for x in g["cut_names"][()])
            else:
                raise InputError(f"{path}: run {run_id} has neither params partition.cuts nor cut_names")
            if "autoencoder.rate" not in params:
                raise InputError(f"{path}: run {run_id} has no params attribute autoencoder.rate")
            rate = float(_text(params["autoencoder.rate"]))
            table.setdefault((cuts, rate), []).append(float(g.attrs["throughput_sps"]))
            TIME_MODELS.add(_text(g.attrs.get("time_model", "measured")))
    return table, skipped


def build_table(single_path, multi_path):
    """Rows of dicts: position, cuts, boards, r1_sps, r64_sps, normalized, paper, runs."""
    sources = {}
    for key, path in (("single", single_path), ("multi", multi_path)):
        sources[key] = read_runs(path) if path else ({}, 0)
    rows = []
    for position, cuts, key in ROWS:
        runs, _ = sources[key]
        base = runs.get((cuts, BASE_RATE), [])
        quilt = runs.get((cuts, AE_RATE), [])
        r1 = float(np.mean(base)) if base else math.nan
        r64 = float(np.mean(quilt)) if quilt else math.nan
        norm = r64 / r1 if base and quilt and r1 > 0 else math.nan
        rows.append({
            "position": position,
            "cuts": ",".join(cuts),
            "boards": len(cuts) + 1,
            "r1_sps": r1,
            "r64_sps": r64,
            "normalized": norm,
            "paper": PAPER[cuts],
            "runs": f"{len(base)}+{len(quilt)}",
        })
    return rows, {k: v[1] for k, v in sources.items()}


def _fmt(x, spec):
    return "n/a" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def render_text(rows, inputs):
    out = io.StringIO()
    out.write("Table 3 (QuiltNet, DAC 2022), interposition exploration: normalized performance\n")
    out.write("= throughput(R=64) / throughput(R=1) at the same cut(s); paper: ResNet-50, Alveo U200\n")
    for label, path in inputs:
        out.write(f"{label}: {path}\n")
    if TIME_MODELS:
        board = TIME_MODELS - {"measured"}
        out.write("time model: " + ", ".join(sorted(TIME_MODELS))
                  + ("  (board time from the board profile)\n" if board else
                     "  (the CPU emulators' wall clock; the link is shared memory)\n"))
    out.write(f"{'position':<22}{'boards':>7}{'R=1 samples/s':>16}{'R=64 samples/s':>16}"
              f"{'normalized':>12}{'paper':>8}{'runs':>7}\n")
    for r in rows:
        out.write(f"{r['position']:<22}{r['boards']:>7}{_fmt(r['r1_sps'], '.2f'):>16}"
                  f"{_fmt(r['r64_sps'], '.2f'):>16}{_fmt(r['normalized'], '.3f'):>12}"
                  f"{r['paper']:>8.2f}{r['runs']:>7}\n")
    return out.getvalue()


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["position", "cuts", "boards", "throughput_r1_sps", "throughput_r64_sps",
                    "normalized_perf", "paper_normalized_perf", "runs_r1_plus_r64"])
        for r in rows:
            w.writerow([r["position"], r["cuts"], r["boards"], _fmt(r["r1_sps"], ".6g"),
                        _fmt(r["r64_sps"], ".6g"), _fmt(r["normalized"], ".6g"), r["paper"], r["runs"]])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--single", default="results/interposition.h5",
                   help="result file of experiments/interposition.yaml (default: %(default)s)")
    p.add_argument("--multi", default="results/interposition_multi.h5",
                   help="result file of experiments/interposition_multi.yaml (default: %(default)s)")
    p.add_argument("--out-dir", default=None,
                   help="where to write interposition_table.{txt,csv} (default: beside --single)")
    p.add_argument("--allow-missing", action="store_true",
                   help="print the rows that can be computed when one of the files is missing")
    args = p.parse_args(argv)

    paths = {"single": args.single, "multi": args.multi}
    missing = [k for k, path in paths.items() if not os.path.isfile(path)]
    for k in missing:
        name, command = EXPERIMENTS[k]
        print(f"interposition_table: {paths[k]} not found: run the `{name}` experiment first:\n"
              f"    {command}" + ("" if paths[k].startswith("results/") else f" --output {paths[k]}"),
              file=sys.stderr)
    if missing and (not args.allow_missing or len(missing) == len(paths)):
        return 2
    for k in missing:
        paths[k] = None
    try:
        rows, skipped = build_table(paths["single"], paths["multi"])
    except (InputError, OSError, KeyError) as e:
        print(f"interposition_table: error: {e}", file=sys.stderr)
        return 2
    inputs = [(EXPERIMENTS[k][0], paths[k]) for k in ("single", "multi") if paths[k]]
    text = render_text(rows, inputs)
    for k, n in skipped.items():
        if n:
            text += f"note: {n} failed or incomplete run(s) in {paths[k]} were left out\n"
    if any(math.isnan(r["normalized"]) for r in rows):
        text += "note: n/a where the file has no completed run at R=1 or R=64 for that cut\n"
    sys.stdout.write(text)
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(paths["single"] or paths["multi"]))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "interposition_table.txt"), "w") as f:
        f.write(text)
    write_csv(rows, os.path.join(out_dir, "interposition_table.csv"))
    print(f"wrote {os.path.join(out_dir, 'interposition_table.txt')} and .csv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
