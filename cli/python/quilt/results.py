"""Quilt result files (results/SCHEMA.md) as pandas DataFrames.

Every function takes `paths`: one path (str or pathlib.Path), a glob pattern
("results/*.h5"), or a list of either. Files are read by the one reader of result files, the
C++ reader behind quilt.read_results (quilt._core); nothing here opens HDF5 itself.

    from quilt import results as qr
    runs = qr.runs("results/efficiency.h5")          # one row per run
    runs[runs["autoencoder.rate"] == 64][["model.arch", "throughput_sps", "effective_rate"]]
    qr.stages("results/breakdown.h5")                 # one row per run x stage
    qr.epochs("results/accuracy.h5")                  # one row per training epoch
    qr.batches("results/quickstart.h5")               # one row per run x stage x measured batch

Parameters are columns named by their dotted key (`autoencoder.rate`), typed as pandas reads
them from CSV: numbers are numbers, true/false are booleans, lists (`[after_layer3]`) stay text.
`quilt collect FILES -o table.csv` writes exactly the table `runs()` returns.
"""
import glob
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import _core

# Columns of runs() that are text whatever they hold (a run id may look like a number).
TEXT_COLUMNS = ("file", "experiment", "id", "status", "failure", "verdict", "validity",
                "invalid_reasons", "time_model", "scale", "git_commit", "energy_source",
                "cut_names", "training_mode", "dataset", "stand_in")
# Parameters that only seed randomness: runs that differ only in these are repetitions.
SEED_KEYS = ("seed", "model.seed", "data.seed", "training.seed", "repetition")


class InputError(Exception):
    """A result file is missing, is not a Quilt result, or lacks what an analysis needs. The
    message names the file; analysis scripts exit 2 on it."""


def expand(paths):
    """`paths` (str, Path, glob pattern or a list of them) -> list of file paths, in the order
    given (a glob's matches sorted). A plain path that does not exist, or a pattern that matches
    nothing, is an InputError."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = str(p)
        if glob.has_magic(p):
            found = sorted(glob.glob(p))
            if not found:
                raise InputError(f"{p}: no file matches")
            out += found
        elif not os.path.exists(p):
            raise InputError(f"{p}: no such file (run the experiment first)")
        else:
            out.append(p)
    if not out:
        raise InputError("no result file given")
    return out


def _read(path):
    try:
        return _core.read_results(path)
    except _core.ResultsError as e:
        raise InputError(str(e)) from None


def frame_from_csv(source):
    """A runs table from `quilt collect`'s CSV (a path or a file object) with the dtypes of
    runs(): the text columns stay text ("" where empty), the others as pandas.read_csv infers
    them (so a plain pd.read_csv of the file agrees on every parameter and metric)."""
    text = source.read() if hasattr(source, "read") else Path(source).read_text()
    header = pd.read_csv(io.StringIO(text), nrows=0)
    dtype = {c: str for c in header.columns if c in TEXT_COLUMNS}
    df = pd.read_csv(io.StringIO(text), dtype=dtype)
    for c in dtype:
        df[c] = df[c].fillna("")
    return df


def runs(paths):
    """One row per run of the files, runs in file order then run order. Columns: file,
    experiment, id, status, failure, verdict (OK / FAILED / INVALID / FAIL <metric>, the rules
    of `quilt report`), validity, invalid_reasons, time_model, metrics (throughput_sps, latency,
    energy; empty for training runs), requested_rate and effective_rate of the autoencoder(s),
    training results (training_mode, final_top1, ...; empty for pipeline runs), then one column
    per parameter (analysis/README.md lists them all)."""
    files = expand(paths)
    try:
        text = _core.runs_csv(files)
    except _core.ResultsError as e:
        raise InputError(str(e)) from None
    return frame_from_csv(io.StringIO(text))


def _keys(files):
    """(file, id) -> typed parameters, from runs()."""
    r = runs(files)
    params = [c for c in r.columns if "." in c or c in SEED_KEYS]
    return r[["file", "id"] + params]


def _with_params(rows, files):
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.merge(_keys(files), on=["file", "id"], how="left")


def _median(values):
    return float(np.median(values)) if len(values) else np.nan


def stages(paths):
    """One row per run x pipeline stage: file, id, stage, rank, host, board, units, bytes, the
    per-batch medians (compute_s, recv_wait_s, send_wait_s, h2d_s, d2h_s; NaN where the run has
    none), busy_s, energy_j (NaN when unavailable), the cost model's predicted_compute_s,
    predicted_comm_s, predicted_exec_s (NaN without prediction), time_model, and the run's
    parameters."""
    files = expand(paths)
    rows = []
    for path in files:
        for run in _read(path)["runs"]:
            for k, s in enumerate(run["stages"]):
                row = {"file": path, "id": run["id"], "stage": k, "rank": s["rank"],
                       "host": s["host"], "board": s["board"], "units": s["units"],
                       "bytes_sent": s["bytes_sent"], "bytes_received": s["bytes_received"],
                       "batches": len(s["compute_s"]), "time_model": run["time_model"]}
                for name in ("compute_s", "recv_wait_s", "send_wait_s", "h2d_s", "d2h_s"):
                    row[name] = _median(s[name])
                row["busy_s"] = s["busy_s"]
                row["energy_j"] = s["energy_j"] if s["energy_j"] >= 0 else np.nan
                for name in ("predicted_compute_s", "predicted_comm_s", "predicted_exec_s"):
                    row[name] = s[name] if s[name] >= 0 else np.nan
                rows.append(row)
    return _with_params(rows, files)


def epochs(paths):
    """One row per epoch of every training run: file, id, mode, epoch (1-based over all phases),
    phase, train_loss, train_top1, test_loss, test_top1, test_top5 (NaN when the data set has
    5 classes or fewer: top-5 would be 100% or equal top-1), epoch_s, samples_per_s, classes,
    and the run's parameters. A `converged` column appears when the files record it: True / False
    by the run's convergence rule (training.converge_window), None for a run without one."""
    files = expand(paths)
    rows = []
    for path in files:
        for run in _read(path)["runs"]:
            t = run["training"]
            if t is None:
                continue
            for i in range(len(t["epoch"])):
                row = {"file": path, "id": run["id"], "status": run["status"], "mode": t["mode"],
                       "epoch": t["epoch"][i], "phase": t["phase"][i], "classes": t["classes"]}
                for name in ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5",
                             "epoch_s", "samples_per_s"):
                    row[name] = t[name][i]
                if t["classes"] <= 5:
                    row["test_top5"] = np.nan
                if "converged" in t:
                    # True / False, or None when the run had no convergence rule.
                    c = t["converged"]
                    row["converged"] = None if c is None else bool(c)
                rows.append(row)
    return _with_params(rows, files)


def batches(paths):
    """The per-batch samples of the pipeline runs: one row per run x stage x measured batch
    (warm-up batches are not stored): file, id, stage, batch (0-based over the repetitions'
    measured batches one after another), compute_s, recv_wait_s, send_wait_s, h2d_s, d2h_s (NaN
    when the run has none), latency_s (the batch's end-to-end latency, the same on every stage),
    time_model, and the run's parameters."""
    files = expand(paths)
    frames = []
    for path in files:
        for run in _read(path)["runs"]:
            for k, s in enumerate(run["stages"]):
                n = len(s["compute_s"])
                if n == 0:
                    continue
                cols = {"file": path, "id": run["id"], "stage": k, "batch": np.arange(n),
                        "time_model": run["time_model"]}
                for name in ("compute_s", "recv_wait_s", "send_wait_s", "h2d_s", "d2h_s"):
                    v = np.asarray(s[name], float)
                    cols[name] = v if len(v) == n else np.full(n, np.nan)
                lat = np.asarray(run["latency_s"], float)
                cols["latency_s"] = lat if len(lat) == n else np.full(n, np.nan)
                frames.append(pd.DataFrame(cols))
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df.merge(_keys(files), on=["file", "id"], how="left")


def events(path, run):
    """The timeline of one run (`quilt run` with measurement.trace): one row per event with rank,
    batch, phase (recv_wait, h2d, compute, d2h, send, ...), start_s, end_s (on one clock) and
    duration_s; the frame's attrs["clock"] says "wall" or "board" (dilated/modeled runs). Raises
    InputError when this build's quilt has no timeline reader or the run has no trace."""
    reader = getattr(_core, "read_events", None)
    if reader is None:
        raise InputError("this build of quilt cannot read timelines (no quilt._core.read_events);"
                         " rebuild a Quilt that has `quilt trace`")
    path = expand(path)[0]
    try:
        ev = reader(path, run)
    except _core.ResultsError as e:
        raise InputError(str(e)) from None
    ev = dict(ev)
    clock = ev.pop("clock", "")
    df = pd.DataFrame(ev)
    if not df.empty:
        df["duration_s"] = df["end_s"] - df["start_s"]
    df.attrs["clock"] = clock
    return df


def provenance(paths):
    """One row per file: file, experiment, schema_version, and the provenance attributes (git
    commit, versions, hosts, scale, created_utc, ...)."""
    rows = []
    for path in expand(paths):
        r = _read(path)
        p = dict(r["provenance"])
        p["hosts"] = ";".join(p.get("hosts", []))
        p.pop("experiment_text", None)
        rows.append({"file": path, "experiment": r["name"], "schema_version": r["schema_version"],
                     **p})
    return pd.DataFrame(rows)


def arm_columns(df, exclude=()):
    """The parameter columns of a runs() frame that define an arm (what was compared), i.e. all
    parameters but the seed keys and `exclude`."""
    return [c for c in df.columns if "." in c and c not in SEED_KEYS and c not in exclude]
