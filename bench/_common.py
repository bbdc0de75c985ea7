"""What the scripts of bench/ that set Quilt's Google Benchmark programs side by side with
PyTorch share: one thread everywhere, the load average they print, their command line, and
reading a benchmark program's JSON.

Importing this module pins OpenMP, OpenBLAS and MKL to one thread: import it before torch
(they read the variables when they load). The scripts run as programs from bench/, so
`import _common` finds it.
"""

import argparse
import json
import os
import subprocess

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

# Google Benchmark's time units in seconds.
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def load_average():
    """The 1, 5 and 15 minute load averages as text, or "unknown"."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def parser(doc, binary_help, min_time_s):
    """The command line of a side-by-side script: the benchmark program, --repetitions (5) and
    --min-time (`min_time_s` seconds per repetition); the docstring's first paragraph as the
    description."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("binary", help=binary_help)
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=min_time_s, help="seconds per repetition")
    return ap


def benchmarks(binary, *flags):
    """The "benchmarks" list of `binary --benchmark_format=json <flags>` (it must exit 0)."""
    cmd = [binary, "--benchmark_format=json", *flags]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(res.stdout)["benchmarks"]


def items_per_cpu_s(b, items):
    """`items` per second of process CPU time of one iteration of the benchmark entry `b`."""
    return items / (b["cpu_time"] * _UNIT_S[b["time_unit"]])
