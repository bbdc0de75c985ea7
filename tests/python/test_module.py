"""The pybind11 module `quilt`: model summaries and result files as plain Python structures."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILD, requires_build  # noqa: E402

pytestmark = requires_build


def test_zoo_names(quilt):
    assert {"resnet18", "resnet50", "mlp"} <= set(quilt.model_names())


def test_resnet50_summary_matches_torchvision_counts(quilt):
    s = quilt.summary("resnet50")
    assert s["params"] == 25_557_032
    blocks = [f"layer{n}.{i}" for n, count in ((1, 3), (2, 4), (3, 6), (4, 3)) for i in range(count)]
    assert [u["name"] for u in s["units"]] == ["stem", *blocks, "head"]
    assert [c["name"] for c in s["cuts"]][:4] == ["after_stem", "after_layer1.0", "after_layer1.1", "after_layer1"]
    assert len(s["cuts"]) == 17
    # About 4.1 GMACs per 224x224 image; FLOPs are 2 x MACs.
    assert 8.0e9 < s["flops"] < 8.4e9
    assert sum(u["flops"] for u in s["units"]) == s["flops"]
    cuts = {c["name"]: c for c in s["cuts"]}
    assert cuts["after_layer3"]["shape"] == [1024, 14, 14]
    assert cuts["after_layer3"]["bytes_per_sample"] == 1024 * 14 * 14 * 4


def test_summary_with_rate_gives_wire_bytes(quilt):
    s = quilt.summary("resnet50", rate=64)
    c = {c["name"]: c for c in s["cuts"]}["after_layer3"]
    assert c["wire_shape"] == [16, 14, 14]
    assert c["wire_bytes_per_sample"] == 12544
    assert c["effective_rate"] == 64.0


def test_rates(quilt):
    assert quilt.encoded_channels(1024, 64) == 16
    assert quilt.encoded_channels(64, 120) == 1  # R above C leaves one channel
    assert quilt.effective_rate(64, 120) == 64.0
    assert quilt.effective_rate(1024, 7.5) == pytest.approx(1024 / 137)


def test_resnet18_and_mlp(quilt):
    assert quilt.summary("resnet18")["params"] == 11_689_512
    m = quilt.summary("mlp", input=[30], classes=2)
    assert m["input_shape"] == [30]
    assert [c["name"] for c in m["cuts"]] == ["after_hidden1", "after_hidden2"]
    assert m["params"] == 30 * 512 + 512 + 512 * 512 + 512 + 512 * 2 + 2


def test_bad_names_raise_value_error(quilt):
    with pytest.raises(ValueError, match="resnet50"):
        quilt.summary("resnet51")


def test_read_results_of_a_real_run(quilt, tmp_path):
    exp = tmp_path / "one.yaml"
    exp.write_text("quilt: 1\nname: one\nmodel: {arch: mlp, input: [16], classes: 3}\n"
                   "measurement: {batch: 4, batches: 3, warmup_batches: 1}\n")
    out = tmp_path / "one.h5"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = subprocess.run([os.environ.get("MPIEXEC", "mpiexec"), "-n", "1",
                        str(Path(BUILD) / "bin" / "quilt"), "run", str(exp), "--output", str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    d = quilt.read_results(str(out))
    assert d["name"] == "one"
    assert d["schema_version"] >= 1
    (run,) = d["runs"]
    assert run["status"] == "ok"
    assert run["params"]["model.arch"] == "mlp"
    assert len(run["stages"]) == 1 and len(run["stages"][0]["compute_s"]) == 3
    assert run["throughput_sps"] > 0
    assert "one" in d["provenance"]["experiment_text"]


def test_read_results_errors(quilt, tmp_path):
    with pytest.raises(OSError, match="nope.h5"):
        quilt.read_results(str(tmp_path / "nope.h5"))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(OSError):
        quilt.read_results(str(bad))
