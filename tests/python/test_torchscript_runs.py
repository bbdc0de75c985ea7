"""TorchScript models (arch: torchscript) through the whole pipeline under mpiexec: torchvision
families that are not in the zoo (tests/models/make_torchscript_fixture.py writes them), 2- and
3-stage pipelines with and without autoencoders, skips across the cut, 3-D (ViT token) tensors
at the cut; the bad inputs exit 2 on every rank and write nothing; `quilt models --file`."""
import functools
import os
from pathlib import Path

import h5py
import pytest

from conftest import BUILD, local_quilt, mpi_quilt  # noqa: E402

FIXTURE = os.environ.get("QUILT_TORCHSCRIPT_FIXTURE_DIR")
pytestmark = pytest.mark.skipif(not BUILD or not FIXTURE,
                                reason="QUILT_BUILD_DIR / fixture not set (run through CTest)")

EXPERIMENT = """quilt: 1
name: byom
model: {{arch: torchscript, path: {path}, input: {input}}}
boards: {{count: {boards}, backend: {backend}}}
partition: {{cuts: {cuts}}}
measurement: {{batch: 2, warmup_batches: 1, batches: 2, check_outputs: true}}
sweep:
  matrix:
    autoencoder.rate: {rates}
"""


quilt = functools.partial(mpi_quilt, ranks=2, timeout=300)


def write(tmp_path, model, cuts, rates="[1, 4]", input="[3, 32, 32]", backend="emulator",
          path=None):
    p = tmp_path / "exp.yaml"
    p.write_text(EXPERIMENT.format(path=path or Path(FIXTURE) / (model + ".pt"), input=input,
                                   boards=len(cuts) + 1, backend=backend,
                                   cuts="[" + ", ".join(cuts) + "]", rates=rates))
    return p


CASES = [
    ("mobilenet_v3_small", ["after_features"]),
    ("mobilenet_v3_small", ["after_features.5.block.0", "after_features"]),  # skip across
    ("vgg11", ["after_features"]),  # traced
    ("vgg11", ["after_features.5", "after_avgpool"]),
    ("vit", ["after_encoder"]),  # 3-D tokens x features
    ("vit", ["after_encoder.layers.encoder_layer_0.ln_2", "after_encoder"]),  # skip, 3-D
]


@pytest.mark.parametrize("model,cuts", CASES, ids=[f"{m}-{len(c) + 1}stages" for m, c in CASES])
def test_pipeline_equals_single_process(tmp_path, model, cuts):
    out = tmp_path / "o.h5"
    r = quilt("run", write(tmp_path, model, cuts), "--output", out, ranks=len(cuts) + 1)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        assert len(f["runs"]) == 2  # R = 1 and R = 4
        for rid in f["runs"]:
            a = f["runs"][rid].attrs
            assert a["status"] in (b"ok", "ok"), dict(a)
            # The pipeline's outputs equal the single-process model's (checked by the runner:
            # 1e-4 relative); at R = 1 that is the unsplit scripted model (models_torchscript_test).
            assert a["max_abs_error"] >= 0


def test_null_board_runs_torchscript(tmp_path):
    out = tmp_path / "o.h5"
    r = quilt("run", write(tmp_path, "vit", ["after_encoder"], rates="[1]", backend="null"),
              "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kind,expect", [
    ("missing", "does not exist"),
    ("not_torchscript", "is not a TorchScript file"),
    ("unknown_cut", "valid cuts: "),
    ("loop", "inside a loop"),
    ("branch", "inside an `if`"),
    ("bad_input", "rejects input 3x40x40"),
    ("tuple_output", "output count"),
    ("bf16", "is not available for `arch: torchscript` models yet"),
    ("int8", "is not available for `arch: torchscript` models yet"),
])
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, kind, expect):
    args = dict(model="vit", cuts=["after_encoder"])
    if kind == "missing":
        args["path"] = tmp_path / "nope.pt"
    elif kind == "not_torchscript":
        args["model"] = "not_torchscript"
    elif kind == "unknown_cut":
        args["cuts"] = ["after_nothing"]
    elif kind == "loop":
        args.update(model="loop", cuts=["after_body"], input="[8]")
    elif kind == "branch":
        args.update(model="branch", cuts=["after_odd"], input="[8]")
    elif kind == "bad_input":
        args["input"] = "[3, 40, 40]"
    elif kind == "tuple_output":
        args.update(model="tuple_output", cuts=["after_a"], input="[8]")
    out = tmp_path / "o.h5"
    exp = write(tmp_path, rates="[1]", **args)
    if kind in ("bf16", "int8"):  # the emulator lowers only the zoo's layers in bf16 / int8
        exp.write_text(exp.read_text().replace(
            "backend: emulator}", f"backend: emulator, precision: {kind}, calibration_batches: 1}}"))
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert expect in r.stderr, r.stderr
    assert not out.exists()


def test_models_lists_cuts_with_bytes():
    r = local_quilt("models", "--file", Path(FIXTURE) / "vit.pt", "--input", "3,32,32")
    assert r.returncode == 0, r.stderr
    lines = {l.split()[0]: l for l in r.stdout.splitlines()[1:] if l.startswith("  ")}
    assert "default" in lines["after_encoder"] and "4352 B" in lines["after_encoder"]
    # inside the first encoder block, after ln_2: the residual stream and ln_2's output
    assert "8704 B" in lines["after_encoder.layers.encoder_layer_0.ln_2"]
    assert "after_conv_proj" not in lines  # ints (batch, patch counts) still cross there
