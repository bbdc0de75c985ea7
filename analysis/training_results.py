"""Shared by the accuracy-side analysis scripts (fig2_feasibility.py, table1_accuracy.py,
table2_fig7_weight_freezing.py, fig4_tradeoff.py, table3_interposition_accuracy.py): reading the
training runs of a Quilt result file (results/SCHEMA.md, /runs/<id>/training) with h5py, and
writing a table as text and CSV. Run the scripts with /usr/bin/python3 (h5py, numpy, matplotlib).
"""
import csv
import math
import os

import h5py
import numpy as np

TRAINING_DATASETS = ("epoch", "phase", "train_loss", "train_top1", "test_loss", "test_top1",
                     "test_top5", "epoch_s", "samples_per_s")


class InputError(Exception):
    """A result file is missing or does not hold what a script needs (exit code 2)."""


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_runs(path):
    """Every run of `path` in run order: dicts with id, status, failure, params (str -> str) and
    training (None for pipeline runs; else the group's attributes plus its per-epoch datasets as
    numpy arrays, `phase` as a list of str)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file (run the experiment first)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not an HDF5 file ({e})") from None
    with f:
        if text(f.attrs.get("quilt_format", "")) != "quilt-results":
            raise InputError(f"{path}: not a Quilt result file (no quilt_format attribute)")
        runs = []
        for rid in (text(x) for x in f["run_order"][()]):
            g = f["runs"][rid]
            run = {
                "id": rid,
                "status": text(g.attrs.get("status", "")),
                "failure": text(g.attrs.get("failure", "")),
                "params": {k: text(v) for k, v in g["params"].attrs.items()},
                "throughput_sps": float(g.attrs.get("throughput_sps", 0.0)),
                "time_model": text(g.attrs.get("time_model", "measured")),
                "training": None,
            }
            if "training" in g:
                t = g["training"]
                tr = {k: (text(v) if isinstance(v, (str, bytes)) else v.item())
                      for k, v in t.attrs.items()}
                for name in TRAINING_DATASETS:
                    if name in t:
                        tr[name] = ([text(x) for x in t[name][()]] if name == "phase"
                                    else np.asarray(t[name][()], dtype=float))
                run["training"] = tr
            runs.append(run)
    return runs


def training_runs(path, mode=None):
    """(ok runs, not-ok runs) among the training runs of `path` (optionally of one mode)."""
    ok, bad = [], []
    for r in read_runs(path):
        if r["training"] is None:
            continue
        if mode is not None and r["training"].get("mode") != mode:
            continue
        (ok if r["status"] == "ok" else bad).append(r)
    return ok, bad


def rate(run):
    return float(run["params"].get("autoencoder.rate", "1"))


def param(run, key, default=""):
    return run["params"].get(key, default)


def fmt_pct(x, digits=2):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def fmt_pt(x, digits=2):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{digits}f} pt"


def output_base(input_path, out_dir, stem):
    """<out_dir or the input's directory>/<stem>, the directory created."""
    d = out_dir or os.path.dirname(os.path.abspath(input_path))
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, stem)


def write_table(base, header, rows, text_out):
    """Writes <base>.csv (header + rows) and <base>.txt (text_out)."""
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    with open(base + ".txt", "w") as f:
        f.write(text_out)


def stand_in_lines(runs):
    notes = sorted({r["training"].get("stand_in", "") for r in runs} - {""})
    return [f"Small-scale stand-in: {n}." for n in notes]


def failed_lines(bad):
    return [f"Left out: run {r['id']} {r['status']}: {r['failure']}" for r in bad]


def spearman(x, y):
    """Spearman rank correlation of two equal-length sequences (ties get average ranks); NaN
    when fewer than 3 points or a sequence is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return float("nan")

    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):
            same = v == value
            r[same] = r[same].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
