"""End to end for the zoo's newer models: a UNet cut across its skip connections and an
EfficientNet-B0 on two boards under mpiexec, outputs checked against the single-process model,
cut bytes summed over every crossing tensor. Needs QUILT_BUILD_DIR (CTest sets it)."""
import os
import subprocess
from pathlib import Path

import h5py
import pytest

from conftest import BUILD, ENV, MPIEXEC, requires_build, SOURCE  # noqa: E402

DATA = SOURCE / "tests" / "harness" / "data"
pytestmark = requires_build


def run_mpi(ranks, *args, timeout=600):
    cmd = [MPIEXEC, "-n", str(ranks), str(Path(BUILD) / "bin" / "quilt"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def ok_runs(path):
    with h5py.File(path, "r") as f:
        runs = {}
        for rid in f["runs"]:
            g = f["runs"][rid]
            assert g.attrs["status"] == "ok", g.attrs["failure"]
            assert g.attrs["complete"] == 1
            # The pipeline computed what the single-process model computes.
            assert 0 <= g.attrs["max_abs_error"] < 1e-3
            assert g.attrs["throughput_sps"] > 0
            rate = float(g["params"].attrs["autoencoder.rate"])
            runs[rate] = ([x.decode() if isinstance(x, bytes) else x for x in g["cut_names"][()]],
                          list(g["cut_bytes_per_sample"][()]),
                          list(g["cut_wire_bytes_per_sample"][()]),
                          list(g["cut_effective_rate"][()]))
        return runs


def test_unet_cut_across_skips_runs_on_two_boards(tmp_path):
    out = tmp_path / "unet.h5"
    r = run_mpi(2, "run", DATA / "unet_skips.yaml", "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = ok_runs(out)
    assert sorted(runs) == [1.0, 4.0]
    full = 4 * (64 * 32 * 32 + 128 * 16 * 16 + 256 * 8 * 8)  # inc, down1, down2
    wire4 = 4 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)  # each encoded to C/4 channels
    assert runs[1.0][:3] == (["after_down2"], [full], [full])
    assert runs[4.0][:3] == (["after_down2"], [full], [wire4])
    assert runs[4.0][3][0] == pytest.approx(4.0)


def test_efficientnet_at_small_input_runs_on_two_boards(tmp_path):
    text = (DATA / "unet_skips.yaml").read_text()
    text = text.replace("name: unet_skips", "name: effnet").replace("arch: unet",
                                                                    "arch: efficientnet_b0")
    text = text.replace("classes: 2", "classes: 10").replace("after_down2", "after_features.4")
    text = text.replace("[3, 32, 32]", "[3, 64, 64]").replace("[1, 4]", "[1, 8]")
    exp = tmp_path / "effnet.yaml"
    exp.write_text(text)
    out = tmp_path / "effnet.h5"
    r = run_mpi(2, "run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = ok_runs(out)
    # features.4 (the paper's "after stage 5") at 64x64: 80 x 4 x 4 floats per sample.
    assert runs[1.0][:3] == (["after_features.4"], [80 * 4 * 4 * 4], [80 * 4 * 4 * 4])
    assert runs[8.0][:3] == (["after_features.4"], [80 * 4 * 4 * 4], [10 * 4 * 4 * 4])
