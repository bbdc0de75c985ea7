"""The rest of the harness on TorchScript models (arch: torchscript, issue 11): `quilt profile
--file` and `quilt summary --file` (per unit and per graph operation: shapes, FLOPs, weight and
activation bytes, measured times; JSON and CSV; bad inputs exit 2 naming the option), `cuts:
auto` and `quilt plan`, the three time models with energy, and the XRT preflight and a run on
XRT's noop shim. Models: tests/models/make_torchscript_fixture.py (CTest fixture
models_torchscript)."""
import csv
import functools
import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import BUILD, ENV, MPIEXEC, QUILT, local_quilt, mpi_quilt  # noqa: E402

FIXTURE = os.environ.get("QUILT_TORCHSCRIPT_FIXTURE_DIR")
pytestmark = pytest.mark.skipif(not BUILD or not FIXTURE,
                                reason="QUILT_BUILD_DIR / fixture not set (run through CTest)")

quilt = functools.partial(mpi_quilt, ranks=2, timeout=300)

# The ViT fixture: image 32, patch 8 -> 16 patches + the class token = 17 tokens of 64 features,
# 2 encoder layers of 2 heads, MLP 128, 10 classes.
TOKENS, HIDDEN, MLP = 17, 64, 128
# alveo-u200.yaml
PEAK_FLOPS, EFFICIENCY, OVERHEAD_S = 18.6e12, 0.232, 50e-6


def model(name):
    return Path(FIXTURE) / f"{name}.pt"


def profile(tmp_path, name, *extra, suffix="json"):
    out = tmp_path / f"{name}.{suffix}"
    r = local_quilt("profile", "--file", model(name), "--input", "3,32,32", "--output", out,
                    *extra, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, out


@pytest.fixture(scope="module")
def vit_profile(tmp_path_factory):
    r, out = profile(tmp_path_factory.mktemp("prof"), "vit")
    return r.stdout, json.loads(out.read_text())


def test_profile_totals_are_the_sums_of_the_operations(vit_profile):
    _, p = vit_profile
    assert p["model"] == "torchscript" and p["file"].endswith("vit.pt")
    assert p["input_shape"] == [3, 32, 32] and p["measured"] is False
    assert [u["name"] for u in p["units"]] == ["encoder", "heads"]
    assert p["units"][0]["cut_after"] == "after_encoder" and p["units"][1]["cut_after"] is None
    for u in p["units"]:
        assert u["layers"], u["name"]
        assert u["flops"] == sum(l["flops"] for l in u["layers"])
        assert u["macs"] == sum(l["macs"] for l in u["layers"])
        assert u["flops"] >= 2 * u["macs"] > 0
    # elementwise, norm, softmax on top of the MACs (heads is one linear: its MACs only)
    assert p["units"][0]["flops"] > 2 * p["units"][0]["macs"]
    assert p["flops"] == sum(u["flops"] for u in p["units"])
    assert p["macs"] == sum(u["macs"] for u in p["units"])
    assert p["units"][0]["out_shape"] == [TOKENS, HIDDEN]
    assert p["units"][0]["out_bytes"] == 4 * TOKENS * HIDDEN


def test_profile_counts_known_layers_by_hand(vit_profile):
    _, p = vit_profile
    nodes = [l for u in p["units"] for l in u["layers"]]
    (conv,) = [l for l in nodes if l["type"] == "aten::conv2d"]
    # Conv2d(3, 64, kernel 8, stride 8) on 3x32x32: 64x4x4 outputs of 3*8*8 MACs each.
    assert conv["name"] == "conv_proj"
    assert conv["out_shape"] == [64, 4, 4] and conv["in_shape"] == [3, 32, 32]
    assert conv["macs"] == 64 * 4 * 4 * 3 * 8 * 8 and conv["flops"] == 2 * conv["macs"]
    assert conv["params"] == 64 * 3 * 8 * 8 + 64 and conv["param_bytes"] == 4 * conv["params"]
    assert conv["out_bytes"] == 4 * 64 * 4 * 4
    # Attention runs inside an `if` of MultiheadAttention; its projections and matmuls count:
    # q, k, v and out projections (4 L E^2) and Q K^T, A V (2 L^2 E), whichever path it takes.
    attention = [l for l in nodes if l["name"] == "encoder.layers.encoder_layer_0.self_attention"]
    assert sum(l["macs"] for l in attention) == 4 * TOKENS * HIDDEN ** 2 + 2 * TOKENS ** 2 * HIDDEN
    # The MLP block: 64 -> 128 -> 64 per token.
    mlp = [l for l in nodes if l["name"].startswith("encoder.layers.encoder_layer_0.mlp")]
    assert sum(l["macs"] for l in mlp) == 2 * TOKENS * HIDDEN * MLP
    norms = [l for l in nodes if l["type"] == "aten::layer_norm"]
    assert len(norms) == 5  # ln_1, ln_2 per layer and the encoder's ln
    assert all(l["flops"] == 5 * TOKENS * HIDDEN and l["params"] == 2 * HIDDEN for l in norms)
    (head,) = [l for l in nodes if l["type"] == "aten::linear" and l["name"] == "heads.head"]
    assert head["macs"] == HIDDEN * 10 and head["out_shape"] == [10]


def test_profile_table_and_model_macs_agree(vit_profile, tmp_path):
    text, p = vit_profile
    assert "vit.pt (torchscript) input 3x32x32: 2 unit(s)" in text
    assert "MFLOPs" in text and "aten::conv2d" in text and "conv_proj" in text
    # The model's own unit MACs (the cost model's) include the attention inside the `if`s.
    r = local_quilt("summary", "--file", model("vit"), "--input", "3,32,32")
    assert r.returncode == 0, r.stderr
    assert f"{2 * p['macs'] / 1e9:.3f} of them 2 x MACs" in r.stdout
    lines = {l.split()[0]: l.split() for l in r.stdout.splitlines() if l.strip()}
    assert lines["after_encoder"][1:3] == ["17x64", str(4 * TOKENS * HIDDEN)]
    assert lines["encoder"][-1] == str(4 * TOKENS * HIDDEN)
    assert int(lines["heads"][-2]) == p["units"][1]["params"] == HIDDEN * 10 + 10


def test_profile_csv_of_a_traced_model(tmp_path):
    r, out = profile(tmp_path, "vgg11", "--units-only", suffix="csv")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[-2:] == ["macs", "param_bytes"]
    assert [row["unit"] for row in rows] == ["features", "avgpool", "classifier"]
    r, out = profile(tmp_path, "vgg11", suffix="csv")
    rows = list(csv.DictReader(out.open()))
    units = [row for row in rows if not row["layer"]]
    for u in units:
        ops = [row for row in rows if row["layer"] and row["unit"] == u["unit"]]
        assert int(u["flops"]) == sum(int(o["flops"]) for o in ops)
    first = next(row for row in rows if row["type"] == "aten::_convolution")  # traced: _convolution
    assert first["layer"] == "features.0"
    # Conv2d(3, 64, 3, padding 1) on 3x32x32: 64x32x32 outputs of 27 MACs.
    assert int(first["macs"]) == 64 * 32 * 32 * 27 and int(first["flops"]) == 2 * int(first["macs"])
    assert int(first["param_bytes"]) == 4 * (64 * 27 + 64)
    pool = next(row for row in rows if row["type"] == "aten::max_pool2d")
    assert pool["out_shape"] == "64x16x16" and int(pool["flops"]) == 64 * 16 * 16 * 4


def test_profile_measure_times_units_and_operations(tmp_path):
    r, out = profile(tmp_path, "vit", "--measure", "--repeats", "3", "--warmup", "2")
    p = json.loads(out.read_text())
    assert p["measured"] is True and "CompiledStage" in p["method"]
    assert "TorchScript interpreter" in p["layer_method"]
    for u in p["units"]:
        assert 0 < u["measured_s"] < 1, u
        timed = [l for l in u["layers"] if "measured_s" in l]
        assert len(timed) == len(u["layers"])  # every operation here runs alone
        assert all(0 < l["measured_s"] < 1 for l in timed)
    assert "sum of units:" in r.stdout and "ms/batch" in r.stdout


def test_calibrate_fits_a_profile_to_a_torchscript_model(tmp_path):
    out = tmp_path / "fit.yaml"
    r = local_quilt("calibrate", "--file", model("vgg11"), "--input", "3,32,32", "--profile",
                    "cpu", "--output", out, "--repeats", "3", "--warmup", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fit quality over 3 unit(s)" in r.stdout
    text = out.read_text()
    assert "calibration:" in text and "vgg11.pt" in text


BAD = [
    (["profile", "--file", "MISSING", "--input", "3,32,32"], "--file: TorchScript file"),
    (["profile", "--file", "not_torchscript", "--input", "3,32,32"],
     "is not a TorchScript file"),
    (["profile", "--file", "vit", "--input", "3,40,40"], "--input: the model"),
    (["profile", "--file", "vit"], "--file needs --input"),
    (["profile", "resnet18", "--file", "vit", "--input", "3,32,32"], "not both"),
    (["profile", "--file", "vit", "--input", "3,32,32", "--cut", "after_nothing"],
     "--cut: unknown cut \"after_nothing\""),
    (["profile", "--file", "vit", "--input", "3,32,32", "--classes", "3"],
     "--classes does not apply"),
    (["profile", "--file", "vit", "--input", "3,32,32", "--output", "x.txt"], ".csv or .json"),
    (["profile", "--file", "tuple_output", "--input", "8"], "--file: the forward of"),
    (["summary", "--file", "MISSING", "--input", "3,32,32"], "--file: TorchScript file"),
    (["summary", "--file", "vit"], "--file needs --input"),
    (["summary"], "give a model of `quilt models` or --file"),
]


@pytest.mark.parametrize("args,expect", BAD, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_inputs_exit_2_naming_the_option(tmp_path, args, expect):
    args = [str(tmp_path / "nope.pt") if a == "MISSING" else
            str(model(a)) if (Path(FIXTURE) / f"{a}.pt").exists() else a for a in args]
    r = local_quilt(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert expect in r.stderr, r.stderr
    assert "internal error" not in r.stderr


EXPERIMENT = """quilt: 1
name: tsh
model: {{arch: torchscript, path: {path}, input: [3, 32, 32]}}
boards: {{count: {boards}, backend: emulator, profile: alveo-u200}}
partition: {partition}
measurement: {{batch: 2, warmup_batches: 2, batches: 4, check_outputs: true}}
"""


def experiment(tmp_path, name="vit", boards=2, partition="{cuts: auto}", sweep=""):
    p = tmp_path / "exp.yaml"
    p.write_text(EXPERIMENT.format(path=model(name), boards=boards, partition=partition) + sweep)
    return p


def test_cuts_auto_plan_and_run(tmp_path):
    exp = experiment(tmp_path)
    r = local_quilt("plan", exp)
    assert r.returncode == 0, r.stderr
    (chosen,) = [l for l in r.stdout.splitlines() if "cuts chosen by the search" in l]
    assert chosen.split(": ")[-1] == "after_encoder", chosen
    stages = [l for l in r.stdout.splitlines() if l.strip().startswith("stage ")]
    assert len(stages) == 2 and all("predicted" in l for l in stages), r.stdout
    out = tmp_path / "o.h5"
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        (g,) = f["runs"].values()
        assert g.attrs["status"] in (b"ok", "ok")
        assert [c.decode() if isinstance(c, bytes) else c for c in g["cut_names"][()]] == \
            ["after_encoder"]


def test_fixed_named_cut_is_planned(tmp_path):
    # 3 boards: the named (not default) cut inside the first encoder block and one the search
    # chooses (after_encoder, the only default one).
    exp = experiment(tmp_path, boards=3,
                     partition="{cuts: auto, fixed: [after_encoder.layers.encoder_layer_0]}")
    r = local_quilt("plan", exp)
    assert r.returncode == 0, r.stderr
    (chosen,) = [l for l in r.stdout.splitlines() if "cuts chosen by the search" in l]
    assert chosen.split(": ")[-1] == "after_encoder.layers.encoder_layer_0, after_encoder", chosen
    stages = [l for l in r.stdout.splitlines() if l.strip().startswith("stage ")]
    assert len(stages) == 3 and all("predicted" in l for l in stages), r.stdout


@pytest.fixture(scope="module")
def time_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tm")
    exp = experiment(tmp, partition="{cuts: [after_encoder]}",
                     sweep="sweep:\n  matrix:\n    boards.time_model: [measured, modeled, dilated]\n")
    out = tmp / "tm.h5"
    r = quilt("run", exp, "--output", out, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = {}
    with h5py.File(out, "r") as f:
        for g in f["runs"].values():
            stages = []
            for k in range(len(g["stages"])):
                s = g["stages"][str(k)]
                stages.append({**dict(s.attrs), **{n: s[n][()] for n in s}})
            runs[g.attrs["time_model"]] = {"attrs": dict(g.attrs), "stages": stages}
    r, prof = profile(tmp, "vit", "--units-only")
    return runs, json.loads(prof.read_text())


@pytest.mark.parametrize("tm", ["measured", "modeled", "dilated"])
def test_time_models_complete_with_energy(time_models, tm):
    runs, _ = time_models
    a = runs[tm]["attrs"]
    assert a["status"] in (b"ok", "ok") and a["throughput_sps"] > 0
    assert a["max_abs_error"] >= 0  # the output check ran (check_outputs) and passed
    for s in runs[tm]["stages"]:
        assert np.all(s["compute_s"] > 0)
    assert a["energy_source"] in (b"profile", "profile")
    assert a["energy_j"] > 0 and a["energy_per_sample_j"] > 0
    assert a["energy_j"] == pytest.approx(sum(s["energy_j"] for s in runs[tm]["stages"]),
                                          rel=1e-9)


def test_modeled_compute_uses_the_unit_macs(time_models):
    runs, prof = time_models
    batch = runs["modeled"]["attrs"]["batch_size"]
    for s, unit in zip(runs["modeled"]["stages"], prof["units"]):
        expect = batch * 2 * unit["macs"] / (PEAK_FLOPS * EFFICIENCY) + OVERHEAD_S
        assert s["predicted_compute_s"] == pytest.approx(expect, rel=1e-9)
        assert np.median(s["compute_s"]) == pytest.approx(expect, rel=1e-9)
    # dilated: real execution stretched to the profile's times, close to the modeled ones.
    d = runs["dilated"]
    assert d["attrs"]["dilation"] > 1
    for sd, sm in zip(d["stages"], runs["modeled"]["stages"]):
        assert np.median(sd["compute_s"]) == pytest.approx(np.median(sm["compute_s"]), rel=0.3)


# The XRT backend on XRT's noop shim (tests/backends/test_xrt_cli.py; /work/shared/XRT.md).
MAKE_XCLBIN = Path(BUILD or ".") / "tests" / "backends" / "quilt_make_test_xclbin"
needs_xrt = pytest.mark.skipif(not MAKE_XCLBIN.exists(), reason="the XRT backend is not built")


def xrt_env():
    e = dict(ENV, XCL_EMULATION_MODE="noop")
    e.pop("XILINX_XRT", None)
    return e


def xrt_experiment(tmp_path, xclbin, extra=""):
    p = tmp_path / "xrt.yaml"
    p.write_text(f"""quilt: 1
name: ts_xrt
model: {{arch: torchscript, path: {model('vit')}, input: [3, 32, 32]}}
boards:
  count: 2
  backend: xrt
  xclbin: {xclbin}
{extra}partition: {{cuts: [after_encoder]}}
measurement: {{batch: 2, warmup_batches: 1, batches: 2, check_outputs: false}}
output: {tmp_path / 'xrt.h5'}
""")
    return p


def xrt_run(path):
    return subprocess.run([MPIEXEC, "-n", "2", QUILT, "run", str(path)], capture_output=True,
                          text=True, timeout=180, env=xrt_env())


@pytest.fixture(scope="module")
def xclbin(tmp_path_factory):
    path = tmp_path_factory.mktemp("xclbin") / "stages.xclbin"
    subprocess.run([str(MAKE_XCLBIN), str(path)], check=True, timeout=30)
    return path


@needs_xrt
def test_xrt_noop_run_completes(tmp_path, xclbin):
    p = xrt_run(xrt_experiment(tmp_path, xclbin))
    assert p.returncode == 0, p.stdout + p.stderr
    with h5py.File(tmp_path / "xrt.h5", "r") as f:
        (g,) = f["runs"].values()
        assert g.attrs["status"] in (b"ok", "ok")
        assert len(g["stages"]) == 2


@needs_xrt
@pytest.mark.parametrize("kind", ["missing_xclbin", "missing_kernel", "bad_device"])
def test_xrt_preflight_is_bad_input_on_every_rank(tmp_path, xclbin, kind):
    if kind == "missing_xclbin":
        path, expect = xrt_experiment(tmp_path, tmp_path / "nope.xclbin"), "nope.xclbin` does not exist"
    elif kind == "missing_kernel":
        stage0 = tmp_path / "stage0.xclbin"
        subprocess.run([str(MAKE_XCLBIN), str(stage0), "quilt_stage0"], check=True, timeout=30)
        path, expect = xrt_experiment(tmp_path, stage0), "kernel `quilt_stage1` (stage 1) is not in"
    else:
        path = xrt_experiment(tmp_path, xclbin, "  devices: [0, 9]\n")
        expect = "rank 1: no XRT device with index 9 (boards.devices)"
    p = xrt_run(path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert expect in p.stderr, p.stderr
    for marker in ("internal error", "terminate called", "Segmentation fault", "what():"):
        assert marker not in p.stdout + p.stderr, p.stderr
    assert not (tmp_path / "xrt.h5").exists()  # checked before any run: nothing written
