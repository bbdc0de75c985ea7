"""§1 of issue 15: the pipeline with one rank per host of the test bed, over TCP. Each run's
outputs are checked against the single-process model by the harness itself
(measurement.check_outputs: status ok and max_abs_error >= 0), and the file's provenance names
one host per rank."""
import pytest

from hostbed import SOURCE, down, hosts_of, quilt_on_hosts, runs, up

THREE_STAGES = """quilt: 1
name: hosts_three_stages
model: {arch: resnet18, input: [3, 64, 64], classes: 10}
boards: {count: 3}
partition: {cuts: [after_layer1, after_layer3]}
measurement: {batch: 4, warmup_batches: 1, batches: 4}
sweep:
  matrix:
    autoencoder.rate: [1, 8]
"""


@pytest.fixture(scope="module", autouse=True)
def bed():
    up(4)
    yield
    down()


def check(out, ranks, expected_runs):
    rs = runs(out)
    assert len(rs) == expected_runs
    for rid, a in rs:
        assert a["status"] == "ok", (rid, a.get("failure"))
        assert a["max_abs_error"] >= 0, "outputs were not checked against the single-process model"
        assert a["throughput_sps"] > 0
    assert hosts_of(out) == [f"qtb-h{k}" for k in range(1, ranks + 1)]


def test_quickstart_two_hosts(tmp_path):
    out = tmp_path / "quickstart.h5"
    r = quilt_on_hosts(2, "run", SOURCE / "experiments" / "quickstart.yaml", "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    check(out, 2, 2)


def test_three_stages_three_hosts(tmp_path):
    exp = tmp_path / "three.yaml"
    exp.write_text(THREE_STAGES)
    out = tmp_path / "three.h5"
    r = quilt_on_hosts(3, "run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    check(out, 3, 2)


def test_four_boards_multi_autoencoder_four_hosts(tmp_path):
    # Table 3's multi-AE case on the CPU emulators' own clock (scale `cpu`: 112x112 inputs).
    out = tmp_path / "multi.h5"
    r = quilt_on_hosts(4, "run", SOURCE / "experiments" / "interposition_multi.yaml",
                       "--scale", "cpu", "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    check(out, 4, 2)
