"""The merged multi-rank timeline end to end: a 3-rank MLP pipeline under mpiexec stores
/runs/<id>/trace, `quilt trace` turns it into valid Chrome trace-event JSON (one track per rank),
analysis/timeline.py draws the PNG through the `quilt` module, a modeled run is in board time,
and measurement.trace is validated strictly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILD, MPIEXEC, requires_build  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = requires_build
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1",
           PYTHONPATH=str(Path(BUILD or ".") / "python"))

EXPERIMENT = """quilt: 1
name: trace
model: {arch: mlp, input: [32], classes: 5, seed: 1}
boards: {count: 3, time_model: TIME_MODEL, profile: alveo-u200}
partition: {cuts: [after_hidden1, after_hidden2]}
autoencoder: {rate: 8}
measurement: {batch: 4, warmup_batches: 2, batches: 6, repetitions: 2TRACE}
"""


def run(tmp_path, time_model="measured", trace="", name="t"):
    exp = tmp_path / f"{name}.yaml"
    exp.write_text(EXPERIMENT.replace("TIME_MODEL", time_model).replace("TRACE", trace))
    out = tmp_path / f"{name}.h5"
    r = subprocess.run([MPIEXEC, "-n", "3", str(Path(BUILD) / "bin" / "quilt"), "run", str(exp),
                        "--output", str(out)], capture_output=True, text=True, timeout=300,
                       env=ENV)
    return r, out


def quilt(*args):
    return subprocess.run([str(Path(BUILD) / "bin" / "quilt"), *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=ENV)


def read_events(path, run_id=""):
    sys.path.insert(0, str(Path(BUILD) / "python"))
    import quilt as q
    return q.read_events(str(path), run_id)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("measured")
    r, out = run(tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_events_are_stored_for_every_rank_and_batch(measured):
    ev = read_events(measured)
    assert ev["clock"] == "wall" and ev["time_model"] == "measured"
    assert ev["dropped_events"] == 0
    assert sorted(set(ev["rank"].tolist())) == [0, 1, 2]
    # Two repetitions of 2 warm-up + 6 measured batches: measured batches 0..11, warm-up -2, -1.
    batches = set(ev["batch"].tolist())
    assert batches == set(range(-2, 12))
    assert set(ev["repetition"].tolist()) == {0, 1}
    assert (ev["end_s"] >= ev["start_s"]).all()
    phases = set(ev["phase"])
    assert {"compute", "recv_wait", "send_wait", "send"} <= phases
    assert set(ev["phase"]) <= set(ev["phases"])
    # Every rank computes every batch of both repetitions once.
    compute = [(r, b, rep) for r, b, rep, p in
               zip(ev["rank"], ev["batch"], ev["repetition"], ev["phase"]) if p == "compute"]
    assert len(compute) == len(set(compute)) == 3 * 2 * 8


def test_quilt_trace_writes_valid_trace_event_json(measured, tmp_path):
    out = tmp_path / "trace.json"
    r = quilt("trace", measured, "-o", out)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    meta = [e for e in events if e["ph"] == "M"]
    assert complete and meta
    for e in complete:
        for field in ("name", "ph", "ts", "dur", "pid", "tid"):
            assert field in e, e
        assert isinstance(e["ts"], (int, float)) and e["dur"] >= 0
    # One process (track) per rank, named; pid = rank, the rank's phases on tid = rank.
    names = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert sorted(names) == [0, 1, 2]
    assert all("wall time" in n for n in names.values())
    assert {e["pid"] for e in complete} == {0, 1, 2}
    for e in complete:
        lane = 1000 * (1 + e["args"]["batch"] % 2)
        assert e["tid"] == (lane + e["pid"] if e["name"] == "send" else e["pid"])
    # Within one thread, events nest (Perfetto rejects partial overlaps): sorted, none overlaps,
    # not even by the nanosecond that rounding ts and dur separately would give.
    for tid in {e["tid"] for e in complete}:
        xs = sorted((e["ts"], e["ts"] + e["dur"]) for e in complete if e["tid"] == tid)
        for (s0, e0), (s1, e1) in zip(xs, xs[1:]):
            assert s1 >= e0 - 1e-6, (tid, (s0, e0), (s1, e1))
    assert doc["otherData"]["clock"] == "wall"


def test_timeline_png_is_written(measured, tmp_path):
    out = tmp_path / "timeline.png"
    r = subprocess.run([sys.executable, str(ROOT / "analysis" / "timeline.py"), str(measured),
                        "-o", str(out)], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10000
    assert "wall time" in r.stdout


def test_modeled_run_is_in_board_time_and_says_so(tmp_path):
    r, out = run(tmp_path, time_model="modeled", name="m")
    assert r.returncode == 0, r.stdout + r.stderr
    ev = read_events(out)
    assert ev["clock"] == "board" and ev["time_model"] == "modeled"
    assert {"h2d", "compute", "d2h"} <= set(ev["phase"])
    j = tmp_path / "m.json"
    assert quilt("trace", out, "-o", j).returncode == 0
    doc = json.loads(j.read_text())
    assert "board time" in doc["otherData"]["title"]
    png = tmp_path / "m.png"
    p = subprocess.run([sys.executable, str(ROOT / "analysis" / "timeline.py"), str(out), "-o",
                        str(png)], capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0 and "board time" in p.stdout, p.stdout + p.stderr


def test_trace_false_stores_none_and_quilt_trace_says_why(tmp_path):
    r, out = run(tmp_path, trace=", trace: false", name="off")
    assert r.returncode == 0, r.stdout + r.stderr
    res = quilt("trace", out, "-o", tmp_path / "x.json")
    assert res.returncode == 2 and "no run has a trace" in res.stderr
    assert not (tmp_path / "x.json").exists()


def test_trace_bound_counts_dropped_events(tmp_path):
    r, out = run(tmp_path, trace=", trace: 3", name="bound")
    assert r.returncode == 0, r.stdout + r.stderr
    ev = read_events(out)
    assert ev["max_batches"] == 3 and ev["dropped_events"] > 0
    assert set(ev["batch"].tolist()) == {-2, -1, 0}


@pytest.mark.parametrize("value", ["0", "-1", "yes please", "[1]", "100001", "1.5"])
def test_measurement_trace_is_validated(tmp_path, value):
    exp = tmp_path / "bad.yaml"
    exp.write_text(EXPERIMENT.replace("TIME_MODEL", "measured")
                   .replace("TRACE", f", trace: {value}"))
    r = quilt("validate", exp)
    assert r.returncode == 2 and "measurement.trace" in r.stderr, r.stdout + r.stderr
