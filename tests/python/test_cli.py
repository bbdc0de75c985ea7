"""End to end: the quilt CLI under mpiexec, result files checked with h5py.

Needs QUILT_BUILD_DIR (the CMake build directory); CTest sets it.
"""
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import BUILD, ENV, MPIEXEC, requires_build, SOURCE  # noqa: E402

DATA = SOURCE / "tests" / "harness" / "data"

pytestmark = requires_build



def quilt():
    return str(Path(BUILD) / "bin" / "quilt")


def run_mpi(ranks, *args, timeout=300):
    cmd = [MPIEXEC, "-n", str(ranks), quilt(), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_two_boards_real_pipeline_matches_single_process(tmp_path):
    out = tmp_path / "tiny.h5"
    r = run_mpi(2, "run", DATA / "tiny.yaml", "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "samples/s" in r.stdout
    with h5py.File(out, "r") as f:
        assert f.attrs["quilt_format"] == "quilt-results"
        runs = [f["runs"][k] for k in f["runs"]]
        assert len(runs) == 2
        rates = sorted(float(g["params"].attrs["autoencoder.rate"]) for g in runs)
        assert rates == [1.0, 8.0]
        for g in runs:
            assert g.attrs["status"] == "ok", g.attrs["failure"]
            assert g.attrs["complete"] == 1
            # The pipeline computed what the single-process model computes.
            assert 0 <= g.attrs["max_abs_error"] < 1e-3
            assert g.attrs["throughput_sps"] > 0
            assert len(g["latency_s"]) == 3
            rate = float(g["params"].attrs["autoencoder.rate"])
            # layer2 of ResNet-18 on 64x64: 128 x 8 x 8 floats per sample.
            assert g["cut_bytes_per_sample"][0] == 128 * 8 * 8 * 4
            wire = 128 * 8 * 8 * 4 if rate == 1 else 16 * 8 * 8 * 4
            assert g["cut_wire_bytes_per_sample"][0] == wire
            s0, s1 = g["stages"]["0"], g["stages"]["1"]
            assert s0.attrs["bytes_sent"] == 3 * 2 * wire
            assert s1.attrs["bytes_received"] == 3 * 2 * wire
            assert len(s0["compute_s"]) == 3 and np.all(np.asarray(s0["compute_s"]) > 0)
        prov = f["provenance"]
        assert len(prov["hosts"]) == 2
        assert "tiny" in prov["experiment_text"][()].decode()
        assert prov.attrs["torch_version"].startswith("1.13")


def test_three_boards_mlp_with_one_float_crossing(tmp_path):
    out = tmp_path / "mlp3.h5"
    r = run_mpi(3, "run", DATA / "mlp3.yaml", "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        (g,) = [f["runs"][k] for k in f["runs"]]
        assert g.attrs["status"] == "ok"
        assert list(g["cut_wire_bytes_per_sample"]) == [4, 4]
        assert list(g["cut_effective_rate"]) == [512.0, 512.0]
        assert g.attrs["max_abs_error"] < 1e-4


def test_null_boards_measure_the_harness(tmp_path):
    text = (DATA / "tiny.yaml").read_text().replace("backend: emulator", "backend: null")
    exp = write(tmp_path, "null.yaml", text)
    out = tmp_path / "null.h5"
    r = run_mpi(2, "run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        for k in f["runs"]:
            assert f["runs"][k].attrs["max_abs_error"] == -1  # nothing to compare


BAD = {
    "unknown_model": (("arch: resnet18", "arch: resnet51"), ["unknown model `resnet51`", "resnet50"]),
    "unknown_cut": (("[after_layer2]", "[after_layer9]"), ["after_layer9", "after_layer3"]),
    "rate_below_one": (("[1, 8]", "[1, 0.5]"), ["autoencoder.rate", "got 0.5", "bad.yaml:22:"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_on_every_rank_without_a_file(tmp_path, case):
    (old, new), needles = BAD[case]
    text = (DATA / "tiny.yaml").read_text()
    assert old in text
    exp = write(tmp_path, "bad.yaml", text.replace(old, new, 1))
    out = tmp_path / "bad.h5"
    r = run_mpi(2, "run", exp, "--output", out, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert "bad.yaml" in r.stderr
    assert not out.exists()


def test_rank_count_must_match_boards(tmp_path):
    out = tmp_path / "x.h5"
    r = run_mpi(3, "run", DATA / "tiny.yaml", "--output", out, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "needs 2 boards" in r.stderr and "3 rank(s)" in r.stderr
    assert not out.exists()


def test_missing_experiment_file(tmp_path):
    r = run_mpi(2, "run", tmp_path / "nope.yaml", timeout=120)
    assert r.returncode == 2
    assert "nope.yaml" in r.stderr and "cannot open" in r.stderr


def test_validate_and_plan_need_no_mpi():
    r = subprocess.run([quilt(), "validate", str(DATA / "tiny.yaml"),
                        str(SOURCE / "experiments" / "quickstart.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([quilt(), "plan", str(SOURCE / "experiments" / "quickstart.yaml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1024x14x14 -> 16x14x14" in r.stdout
    assert "802816 -> 12544 B" in r.stdout
