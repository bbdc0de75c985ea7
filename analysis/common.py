"""The command-line preamble of every script in analysis/: find the `quilt` Python package,
parse arguments with real --help, turn an InputError into exit code 2, and write the text and
CSV tables beside the input. The rest is shared through the package: quilt.results (reading),
quilt.verdicts (rules), quilt.paper (the paper's numbers), quilt.plotting (figures).
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_quilt():
    try:
        import quilt  # noqa: F401 (only whether it imports)
        return
    except ImportError:
        pass
    # Not on PYTHONPATH: the build trees of this checkout.
    for build in ("build/release", "build/dev", "build/asan"):
        candidate = ROOT / build / "python"
        if (candidate / "quilt" / "__init__.py").exists():
            sys.path.insert(0, str(candidate))
            return
    sys.stderr.write("analysis: cannot import the quilt package: build it (make quickstart, or "
                     "cmake --build build/release --target quilt_python) and set "
                     "PYTHONPATH=build/release/python\n")
    sys.exit(2)


_import_quilt()

from quilt import results as qr  # noqa: E402

InputError = qr.InputError


def parser(doc, inputs, extra=None):
    """An ArgumentParser whose --help shows the script's docstring. `inputs`: list of
    (name, default, help) positional/optional input files; names starting with -- are options."""
    script = os.path.basename(sys.argv[0]) or "SCRIPT.py"
    example = " ".join(f"{n} {d}" if n.startswith("--") else str(d)
                       for n, d, _ in inputs if d is not None)
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example: PYTHONPATH=build/release/python /usr/bin/python3 analysis/{script} "
               f"{example} --out-dir out/")
    for name, default, text in inputs:
        if name.startswith("--"):
            ap.add_argument(name, default=default, help=f"{text} (default: %(default)s)")
        else:
            ap.add_argument(name, nargs="?", default=default,
                            help=f"{text} (default: %(default)s)")
    ap.add_argument("--out-dir", default=None,
                    help="where to write the figure and tables (default: beside the input)")
    return ap


def main_guard(name, body, argv=None):
    """Runs body(argv) and returns its exit code; an InputError prints `name: message` and
    returns 2."""
    try:
        return body(argv)
    except InputError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2


def script_main(module_name, name, body):
    """The `main(argv=None)` of an analysis script: body(argv) under main_guard(name). When the
    script runs as a program (module_name == "__main__"), runs it and exits with its code."""
    def main(argv=None):
        return main_guard(name, body, argv)
    if module_name == "__main__":
        sys.exit(main())
    return main


def save_figure(fig, base, context, also=(".txt", ".csv")):
    """Writes <base>.png (quilt.plotting.save, `context` as its caption), prints what the script
    wrote (the PNG and the files named by `also`) and returns 0, the script's exit code."""
    from quilt import plotting
    plotting.save(fig, base + ".png", context)
    print("wrote " + ", ".join(base + ext for ext in (".png", *also)))
    return 0


def save_epoch_figure(fig, ax, ylabel, title, base, context):
    """Finishes the one-axes figure of a per-epoch curve (epochs on x, `ylabel`, `title`, the
    legend outside) and writes it as save_figure does; returns 0."""
    from quilt import plotting
    plotting.epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plotting.legend_outside(ax)
    return save_figure(fig, base, context)


def output_base(input_path, out_dir, stem):
    """<out_dir or the input's directory>/<stem>, the directory created."""
    d = out_dir or os.path.dirname(os.path.abspath(input_path))
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, stem)


def write_outputs(base, table, text):
    """Writes <base>.csv (the DataFrame `table`) and <base>.txt (`text`), and prints `text`."""
    table.to_csv(base + ".csv", index=False)
    with open(base + ".txt", "w") as f:
        f.write(text)
    print(text, end="")


def ok_runs(df, what):
    """(ok, left-out lines): the runs of `df` with status ok, and one line per other run."""
    bad = df[df["status"] != "ok"]
    lines = [f"Left out: run {r.id} ({os.path.basename(r.file)}) {r.status}: {r.failure}"
             for r in bad.itertuples()]
    ok = df[df["status"] == "ok"]
    if ok.empty:
        raise InputError(f"no finished runs of {what}")
    return ok, lines


def experiment_runs(doc, argv, experiment, keep, run):
    """(args, ok, left-out lines) of a script whose input is the result file of
    experiments/<experiment>.yaml (results/<experiment>.h5 by default): `argv` parsed by
    parser(doc, ...), the runs that keep(runs) selects, those that finished with their `rate`
    column, one line per other run. `run`, the command that writes the file, is named when no run
    finished."""
    args = parser(doc, [("results", f"results/{experiment}.h5",
                         f"result file of experiments/{experiment}.yaml")]).parse_args(argv)
    runs = qr.runs(args.results)
    ok, left_out = ok_runs(runs[keep(runs)], f"{args.results} (run: {run})")
    return args, ok.assign(rate=rate_of(ok)), left_out


def context_lines(df):
    """The lines that say what the numbers are: time model(s) and stand-in data, printed in the
    text output and on the figure."""
    lines = []
    pipe = df[df["training_mode"] == ""] if "training_mode" in df else df
    models = sorted(set(pipe["time_model"])) if not pipe.empty else []
    if models:
        board = [m for m in models if m != "measured"]
        lines.append("Time model: " + ", ".join(models) + (
            " (board time from the board profile, not this host's clock)" if board else
            " (wall clock of the CPU emulators; the link between ranks is shared memory)"))
    if "stand_in" in df:
        for s in sorted(set(df["stand_in"]) - {""}):
            lines.append(f"Small-scale stand-in: {s}.")
    return lines


def rate_of(df):
    """The requested autoencoder rate per run (1 = no autoencoder): the `autoencoder.rate`
    parameter, else the requested_rate column."""
    if "autoencoder.rate" in df:
        return df["autoencoder.rate"].astype(float)
    return df["requested_rate"].astype(float)


def parse_cuts(text):
    """'[after_layer1, after_layer2]' or 'after_layer1' -> ('after_layer1', ...)."""
    text = str(text).strip()
    if text in ("", "nan"):
        return ()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return tuple(p.strip().strip("'\"") for p in text.split(",") if p.strip())


def seed_of(row):
    """A run's seed identity: the values of its seed parameters (model.seed, data.seed, ...)."""
    return tuple(str(getattr(row, "get", lambda k, d=None: d)(k, "")) for k in qr.SEED_KEYS)


def fmt(x, spec=".2f", none="—"):
    """x formatted, or '—' when it is missing (None or NaN)."""
    try:
        if x is None or x != x:
            return none
    except TypeError:
        pass
    return format(x, spec)


def seeds(df):
    """A Series of seed identities (tuples of the seed parameters present) for the runs of `df`."""
    cols = [c for c in qr.SEED_KEYS if c in df.columns]
    if not cols:
        return df["id"].map(lambda _: ())
    return df[cols].astype(str).apply(tuple, axis=1)


def diff_estimate(base, other, column, scale=1.0):
    """Estimate of other − base of `column` (times `scale`) across seeds: paired by seed when
    the two arms have the same seeds, else Welch's unpaired interval."""
    from quilt import verdicts
    b = dict(zip(seeds(base), base[column].astype(float) * scale))
    o = dict(zip(seeds(other), other[column].astype(float) * scale))
    if len(b) == len(base) and len(o) == len(other) and set(b) == set(o):
        return verdicts.paired(b, o)
    return verdicts.welch(list(b.values()), list(o.values()))


def converged(epochs_df, ids):
    """'yes' / 'no (k of n runs not converged)' / 'unknown' for the runs `ids`, from the epochs table's
    `converged` column when the files record it."""
    from quilt import verdicts
    if epochs_df is None or epochs_df.empty or "converged" not in epochs_df:
        return "unknown"
    flags = []
    for i in ids:
        v = epochs_df.loc[epochs_df["id"] == i, "converged"]
        last = v.iloc[-1] if len(v) else None
        # None / NaN: the run had no convergence rule.
        flags.append(None if last is None or last != last else bool(last))
    return verdicts.converged_text(flags)


def gain_estimate(base, other, column="throughput_sps"):
    """Estimate of the gain 100 * (other / mean(base) - 1) in percent over the runs of `other`
    (each run one sample). Runs of the `modeled` time model are deterministic: the interval is
    degenerate and the estimate says so."""
    from quilt import verdicts
    ref = base[column].astype(float).mean()
    values = [100 * (v / ref - 1) for v in other[column].astype(float)] if ref > 0 else []
    deterministic = bool(len(other)) and set(other["time_model"]) | set(base["time_model"]) == {
        "modeled"}
    return verdicts.estimate(values, deterministic)


def placement_text(position):
    """'Between stage 1 & 2' -> 'between stage 1 & 2'; 'Multi-AE ...' -> 'after every stage
    (Multi-AE)', for verdict lines."""
    return position.lower() if position.startswith("Between") else "after every stage (Multi-AE)"


def protocol_note(df):
    """What the runs of `df` did where the paper's protocol is different, for the header line of
    a table: the scale, the stand-in data/model (the files' `stand_in`), the input size, the
    model width (`model.width` other than 1), the epoch budget and the convergence rule, and the number of seeds. Empty for no runs."""
    if df is None or df.empty:
        return ""
    parts = []
    scale = sorted(set(df["scale"].astype(str)) - {"", "nan"}) if "scale" in df else []
    if scale:
        parts.append("scale " + "/".join(scale))
    if "stand_in" in df:
        parts += sorted(set(df["stand_in"].astype(str)) - {"", "nan"})
    if "model.input" in df:
        sizes = sorted(set(df["model.input"].astype(str)) - {"", "nan"})
        if sizes:
            parts.append("input " + "/".join(sizes))
    if "model.width" in df:
        # Absent in a run = width 1 (results/SCHEMA.md); a narrower ResNet is a deviation.
        widths = sorted({float(w) if str(w) not in ("", "nan", "None") else 1.0
                         for w in df["model.width"]})
        if widths != [1.0]:
            parts.append("ResNet width x" + "/".join(f"{w:g}" for w in widths)
                         + " (stem and stage channels scaled)")
    if "training.epochs" in df:
        epochs = sorted({int(e) for e in df["training.epochs"].dropna()})
        window = (df["training.converge_window"].dropna() if "training.converge_window" in df
                  else [])
        if len(window):
            margin = df["training.converge_margin_pt"].dropna()
            schedule = (sorted(set(df["training.lr_schedule"].dropna().astype(str)))
                        if "training.lr_schedule" in df else [])
            if schedule and schedule != ["constant"]:
                # A decaying schedule runs to its end; the rule judges its last epochs.
                parts.append(f"{'/'.join(map(str, epochs))} epochs of a {'/'.join(schedule)} "
                             f"learning-rate schedule, converged when test top-1 of the last "
                             f"{int(window.iloc[0])} epochs is within {margin.iloc[0]:g} pt")
            else:
                parts.append(f"at most {'/'.join(map(str, epochs))} epochs, stopped once test "
                             f"top-1 was flat within {margin.iloc[0]:g} pt over "
                             f"{int(window.iloc[0])} epochs")
        elif epochs:
            parts.append(f"{'/'.join(map(str, epochs))} epoch(s) (no convergence rule)")
    n = seeds(df).nunique() if len(df) else 0
    parts.append(f"{n} seed{'s' if n != 1 else ''}")
    return "; ".join(parts)
