#!/usr/bin/python3
"""The merged multi-rank timeline of one run as a Gantt chart: ranks x time, one bar per event,
coloured by phase (receive wait, H2D, compute, D2H, send wait; sends on a thin lane under each
rank because they overlap the next batch's compute; training steps: data, forward, backward,
allreduce, optimizer). Warm-up batches are drawn lighter; the pipeline's fill (until the last
rank starts its first batch) and drain (after rank 0 finished its last batch) are shaded.

    /usr/bin/python3 analysis/timeline.py results/quickstart.h5 [--run ID] -o timeline.png

Reads the run's /runs/<id>/trace (measurement.trace) through the `quilt` Python module
(quilt.read_events), not h5py. Under the dilated and modeled time models the times are board
time, and the title says so. Exit codes: 0 ok, 2 missing or unusable input.
"""
import argparse
import os
import sys

# Colours per phase: waits grey, transfers blue, compute orange, training phases their own.
COLOURS = {
    "recv_wait": "#bdbdbd",
    "credit_wait": "#e0e0e0",
    "h2d": "#6baed6",
    "compute": "#fd8d3c",
    "d2h": "#2171b5",
    "send_wait": "#969696",
    "send": "#74c476",
    "data": "#9e9ac8",
    "forward": "#fd8d3c",
    "backward": "#e6550d",
    "allreduce": "#74c476",
    "optimizer": "#6baed6",
}


def import_quilt():
    """The pybind11 module `quilt`: from sys.path, else from the build tree of this checkout."""
    try:
        import quilt  # noqa: F401
        return quilt
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.environ.get("QUILT_BUILD_DIR", ""), "python"),
                  os.path.join(here, "..", "build", "release", "python"),
                  os.path.join(here, "..", "build", "dev", "python")]
    for c in candidates:
        if os.path.isdir(c):
            sys.path.insert(0, c)
            try:
                import quilt  # noqa: F401
                return quilt
            except ImportError:
                sys.path.pop(0)
    sys.exit("timeline.py: error: cannot import the `quilt` Python module; build it "
             "(cmake --build build/release --target quilt_python) or set PYTHONPATH=<build>/python")


def draw(ev, out_path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    import numpy as np

    rank = np.asarray(ev["rank"])
    batch = np.asarray(ev["batch"])
    start = np.asarray(ev["start_s"])
    end = np.asarray(ev["end_s"])
    phase = np.asarray(ev["phase"], dtype=object)
    ranks = sorted(set(rank.tolist()))
    span = float(end.max() - min(0.0, start.min())) if len(end) else 1.0
    # Milliseconds unless the run is long.
    scale, unit = (1e3, "ms") if span < 10 else (1.0, "s")
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * len(ranks)))
    training = any(p in ("forward", "backward") for p in set(phase.tolist()))
    for r in ranks:
        y = len(ranks) - 1 - ranks.index(r)  # rank 0 on top
        for name in ev["phases"]:
            for warm in (True, False):
                sel = (rank == r) & (phase == name) & ((batch < 0) == warm)
                if not sel.any():
                    continue
                bars = list(zip(start[sel] * scale, (end[sel] - start[sel]) * scale))
                lane = (y - 0.42, 0.2) if name == "send" else (y - 0.18, 0.6)
                ax.broken_barh(bars, lane, facecolors=COLOURS.get(name, "#444444"),
                               alpha=0.45 if warm else 1.0, linewidth=0)
    if not training and len(ranks) > 1:
        # Fill: until the last rank begins computing; drain: after rank 0 finished computing.
        comp = phase == "compute"
        last = comp & (rank == ranks[-1])
        first = comp & (rank == ranks[0])
        if last.any() and first.any():
            fill_end = start[last].min() * scale
            drain_start = end[first].max() * scale
            t_end = end.max() * scale
            ax.axvspan(0, fill_end, color="#fff7bc", zorder=0)
            ax.axvspan(drain_start, t_end, color="#fee0d2", zorder=0)
            ax.text(fill_end / 2, len(ranks) - 0.45, "fill", ha="center", va="bottom", fontsize=8)
            ax.text((drain_start + t_end) / 2, len(ranks) - 0.45, "drain", ha="center",
                    va="bottom", fontsize=8)
    ax.set_yticks(range(len(ranks)))
    ax.set_yticklabels([f"rank {r}" for r in reversed(ranks)])
    ax.set_ylim(-0.6, len(ranks) - 0.2)
    ax.set_xlabel(f"{ev['clock']} time since the run's start on rank 0's clock ({unit})")
    present = [p for p in ev["phases"] if p in set(phase.tolist())]
    handles = [Patch(color=COLOURS.get(p, "#444444"), label=p) for p in present]
    if (batch < 0).any():
        handles.append(Patch(color="#fd8d3c", alpha=0.45, label="warm-up (lighter)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.1 / len(ranks)),
              ncol=min(len(handles), 7), fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="a Quilt result file (.h5)")
    p.add_argument("--run", default="", help="run id or unique prefix (default: first traced run)")
    p.add_argument("-o", "--output", default="", help="PNG to write (default: <file>.timeline.png)")
    args = p.parse_args(argv)
    if not os.path.exists(args.file):
        print(f"timeline.py: error: {args.file} does not exist", file=sys.stderr)
        return 2
    quilt = import_quilt()
    try:
        ev = quilt.read_events(args.file, args.run)
    except (OSError, ValueError) as e:
        print(f"timeline.py: error: {e}", file=sys.stderr)
        return 2
    if len(ev["rank"]) == 0:
        print(f"timeline.py: error: run {ev['run_id']} has an empty trace", file=sys.stderr)
        return 2
    clock = ("board time" + f" ({ev['time_model']} time model)" if ev["clock"] == "board"
             else "wall time (measured)")
    dropped = f", {ev['dropped_events']} events beyond measurement.trace's bound not shown" \
        if ev["dropped_events"] else ""
    title = f"{os.path.basename(args.file)} run {ev['run_id']}: {clock}{dropped}"
    out = args.output or os.path.splitext(args.file)[0] + ".timeline.png"
    draw(ev, out, title)
    print(f"{out}: {len(ev['rank'])} events, {len(set(ev['rank'].tolist()))} rank(s), {clock}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
