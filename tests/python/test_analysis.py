"""analysis/interposition_table.py on small synthetic result files laid out as results/SCHEMA.md
says (only what the script reads)."""
import csv
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "analysis" / "interposition_table.py"
sys.path.insert(0, str(ROOT / "analysis"))
import interposition_table  # noqa: E402


def write_results(path, name, runs):
    """runs: list of (cuts text or None, rate text, throughput_sps, status, cut_names)."""
    str_t = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["quilt_format"] = "quilt-results"
        f.attrs["schema_version"] = np.int64(1)
        f.attrs["name"] = name
        f.create_group("runs")
        ids = []
        for i, (cuts, rate, sps, status, cut_names) in enumerate(runs):
            run_id = f"run{i:02d}"
            ids.append(run_id)
            g = f.create_group(f"runs/{run_id}")
            g.attrs["status"] = status
            g.attrs["throughput_sps"] = np.float64(sps)
            params = g.create_group("params")
            if cuts is not None:
                params.attrs["partition.cuts"] = cuts
            params.attrs["autoencoder.rate"] = rate
            g.create_dataset("cut_names", data=np.array(cut_names, dtype=object), dtype=str_t)
            g.attrs["complete"] = np.int64(1)
        f.create_dataset("run_order", data=np.array(ids, dtype=object), dtype=str_t)


@pytest.fixture
def files(tmp_path):
    single = tmp_path / "interposition.h5"
    multi = tmp_path / "interposition_multi.h5"
    write_results(single, "interposition", [
        ("[after_layer1]", "1", 100.0, "ok", ["after_layer1"]),
        ("[after_layer1]", "64", 150.0, "ok", ["after_layer1"]),
        ("[after_layer2]", "1", 100.0, "ok", ["after_layer2"]),
        ("[after_layer2]", "64", 120.0, "ok", ["after_layer2"]),
        ("[after_layer3]", "1", 80.0, "ok", ["after_layer3"]),
        ("[after_layer3]", "64.0", 100.0, "ok", ["after_layer3"]),
        ("[after_layer3]", "64", 1e9, "failed", ["after_layer3"]),  # left out
    ])
    # No partition.cuts parameter: the cuts come from the cut_names dataset.
    three = ["after_layer1", "after_layer2", "after_layer3"]
    write_results(multi, "interposition_multi", [
        (None, "1", 50.0, "ok", three),
        (None, "64", 90.0, "ok", three),
    ])
    return single, multi


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def test_table_values_and_files(files, tmp_path):
    single, multi = files
    r = run_script("--single", single, "--multi", multi)
    assert r.returncode == 0, r.stderr
    lines = {l.split("  ")[0]: l for l in r.stdout.splitlines()}
    assert "1.500" in lines["Between stage 1 & 2"] and "1.22" in lines["Between stage 1 & 2"]
    assert "1.200" in lines["Between stage 2 & 3"] and "1.26" in lines["Between stage 2 & 3"]
    assert "1.250" in lines["Between stage 3 & 4"] and "1.31" in lines["Between stage 3 & 4"]
    assert "1.800" in lines["Multi-AE (4 boards)"] and "1.44" in lines["Multi-AE (4 boards)"]
    assert "1 failed or incomplete run(s)" in r.stdout
    assert (tmp_path / "interposition_table.txt").read_text() == r.stdout
    with open(tmp_path / "interposition_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(x["normalized_perf"]) for x in rows] == pytest.approx([1.5, 1.2, 1.25, 1.8])
    assert [float(x["paper_normalized_perf"]) for x in rows] == [1.22, 1.26, 1.31, 1.44]
    assert [int(x["boards"]) for x in rows] == [2, 2, 2, 4]
    assert rows[3]["cuts"] == "after_layer1,after_layer2,after_layer3"


def test_missing_files_name_the_experiment(tmp_path, files):
    single, _ = files
    r = run_script("--single", tmp_path / "nope.h5", "--multi", tmp_path / "nada.h5")
    assert r.returncode == 2
    assert "experiments/interposition.yaml" in r.stderr
    assert "experiments/interposition_multi.yaml" in r.stderr
    r = run_script("--single", single, "--multi", tmp_path / "nada.h5")
    assert r.returncode == 2
    assert "interposition_multi" in r.stderr
    r = run_script("--single", single, "--multi", tmp_path / "nada.h5", "--allow-missing")
    assert r.returncode == 0, r.stderr
    multi_row = [l for l in r.stdout.splitlines() if l.startswith("Multi-AE")][0]
    assert "n/a" in multi_row
    assert "1.500" in r.stdout


def test_missing_pair_gives_na(tmp_path):
    single = tmp_path / "s.h5"
    multi = tmp_path / "m.h5"
    write_results(single, "interposition", [("[after_layer1]", "1", 10.0, "ok", ["after_layer1"])])
    write_results(multi, "interposition_multi", [])
    rows, _ = interposition_table.build_table(str(single), str(multi))
    assert all(np.isnan(r["normalized"]) for r in rows)
    assert rows[0]["r1_sps"] == 10.0


def test_not_a_result_file(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["x"] = 1
    r = run_script("--single", bad, "--multi", bad)
    assert r.returncode == 2
    assert "not a Quilt result file" in r.stderr


def test_parse_cuts():
    assert interposition_table.parse_cuts("[after_layer1, after_layer2]") == ("after_layer1", "after_layer2")
    assert interposition_table.parse_cuts("after_layer3") == ("after_layer3",)
    assert interposition_table.parse_cuts('["a", "b"]') == ("a", "b")
