"""The emulator's time models: `dilated` (real execution, paced to the board profile, stretched by
one factor) and `modeled` (virtual time from the profile) agree within 10% on the same
experiment; `modeled` follows the cost model; energy comes from the profile's power figures."""
import functools

import h5py
import numpy as np
import pytest

from conftest import local_quilt as local, mpi_quilt, requires_build, run_ok  # noqa: E402

pytestmark = requires_build

# ResNet-18 at 64x64 on two Alveo U200 profiles: board times of ~50-80 us per batch, so the
# dilated run stretches them by ~1000 and runs ~1 s.
EXPERIMENT = """quilt: 1
name: time-models
model: {arch: resnet18, input: [3, 64, 64], classes: 10, seed: 3}
boards: {count: 2, backend: emulator, profile: alveo-u200}
partition: {cuts: [after_layer2]}
autoencoder: {rate: 1}
measurement: {batch: 2, warmup_batches: 2, batches: 12, repetitions: 3}
sweep:
  matrix:
    boards.time_model: [modeled, dilated]
    autoencoder.rate: [1, 8]
"""

quilt = functools.partial(mpi_quilt, ranks=2, timeout=600)
run = functools.partial(run_ok, ranks=2, timeout=600)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = run(tmp_path_factory.mktemp("tm"), EXPERIMENT, "tm")
    runs = {}
    with h5py.File(out, "r") as f:
        for rid in f["runs"]:
            g = f["runs"][rid]
            key = (g["params"].attrs["boards.time_model"], g["params"].attrs["autoencoder.rate"])
            stages = []
            for k in range(len(g["stages"])):
                s = g["stages"][str(k)]
                stages.append({**dict(s.attrs), **{n: s[n][()] for n in s}})
            runs[key] = {"attrs": dict(g.attrs), "stages": stages,
                         "durations": g["repetition_duration_s"][()]}
    return runs


def busy(stage):
    return stage["h2d_s"] + stage["compute_s"] + stage["d2h_s"]


@pytest.mark.parametrize("rate", ["1", "8"])
def test_dilated_and_modeled_agree_within_ten_percent(result, rate):
    m, d = result[("modeled", rate)], result[("dilated", rate)]
    assert m["attrs"]["status"] == "ok" and d["attrs"]["status"] == "ok"
    assert m["attrs"]["time_model"] == "modeled" and d["attrs"]["time_model"] == "dilated"
    assert d["attrs"]["dilation"] > 1
    tm, td = m["attrs"]["throughput_sps"], d["attrs"]["throughput_sps"]
    assert abs(td - tm) / tm < 0.10, (tm, td)
    for sm, sd in zip(m["stages"], d["stages"]):
        bm, bd = np.median(busy(sm)), np.median(busy(sd))
        assert abs(bd - bm) / bm < 0.10, (bm, bd)
        # The paced transfers are the profile's, exactly.
        np.testing.assert_allclose(sd["h2d_s"], sm["h2d_s"], rtol=1e-9)
        np.testing.assert_allclose(sd["d2h_s"], sm["d2h_s"], rtol=1e-9)


def test_modeled_follows_the_cost_model(result):
    for rate in ["1", "8"]:
        run = result[("modeled", rate)]
        stages = run["stages"]
        slowest = max(np.median(busy(s)) for s in stages)
        batch = run["attrs"]["batch_size"]
        # The slowest board bounds the pipeline (the MPI hop is far from it here).
        assert run["attrs"]["throughput_sps"] == pytest.approx(batch / slowest, rel=1e-6)
        for s in stages:
            # compute is the cost model's compute, h2d + d2h + MPI hop its communication.
            assert np.median(s["compute_s"]) == pytest.approx(s["predicted_compute_s"], rel=1e-9)
            assert np.median(s["h2d_s"] + s["d2h_s"]) <= s["predicted_comm_s"] + 1e-15
    # Fewer bytes over PCIe with the autoencoder: stage 0's D2H, less the profile's 10 us DMA
    # latency, shrinks by R = 8.
    d2h_1 = result[("modeled", "1")]["stages"][0]["d2h_s"][0] - 10e-6
    d2h_8 = result[("modeled", "8")]["stages"][0]["d2h_s"][0] - 10e-6
    assert d2h_8 == pytest.approx(d2h_1 / 8, rel=1e-6)


def test_energy_from_the_profile_power(result):
    # alveo-u200: 225 W busy, 55 W idle, 8e-11 J/byte over PCIe.
    for key, run in result.items():
        a = run["attrs"]
        assert a["energy_source"] == "profile"
        window = run["durations"].sum()
        total = 0
        for s in run["stages"]:
            b = busy(s).sum()
            assert s["busy_s"] == pytest.approx(b, rel=1e-9)
            link = 4 * a["batch_size"] * len(s["compute_s"]) * (
                np.prod(s["in_shape"]) + np.prod(s["out_shape"]))
            expect = 225 * b + 55 * max(0, window - b) + 8e-11 * link
            assert s["energy_j"] == pytest.approx(expect, rel=1e-9), key
            total += s["energy_j"]
        assert a["energy_j"] == pytest.approx(total, rel=1e-12)
        samples = a["batch_size"] * a["measured_batches"] * a["repetitions"]
        assert a["energy_per_sample_j"] == pytest.approx(total / samples, rel=1e-12)


def test_measured_on_the_emulator_has_no_energy_without_power_figures(tmp_path):
    out = run(tmp_path, EXPERIMENT.replace("profile: alveo-u200", "profile: cpu")
              .replace("[modeled, dilated]", "[measured]").replace("[1, 8]", "[1]")
              .replace("batches: 12, repetitions: 3", "batches: 3"), "m")
    with h5py.File(out, "r") as f:
        (g,) = f["runs"].values()
        assert g.attrs["time_model"] == "measured" and g.attrs["dilation"] == 1
        assert g.attrs["energy_source"] == "unavailable" and g.attrs["energy_per_sample_j"] < 0
        assert len(g["stages"]["0"]["h2d_s"]) == 0


def test_link_overrides_need_a_modeled_link(tmp_path):
    exp = tmp_path / "l.yaml"
    exp.write_text(EXPERIMENT.replace("[modeled, dilated]", "[measured]")
                   + "links: {h2d_gbps: 4}\n")
    r = quilt("run", exp, "--output", tmp_path / "l.h5")
    assert r.returncode == 2
    assert "links" in r.stderr and "dilated or modeled" in r.stderr
    assert not (tmp_path / "l.h5").exists()


def test_network_link_is_modeled_and_stated_under_measured(tmp_path):
    # links.mpi_gbps replaces the profile's network in the model's prediction (quilt plan)...
    exp = tmp_path / "n.yaml"
    base = EXPERIMENT.replace("[modeled, dilated]", "[modeled]").replace("[1, 8]", "[1]")
    exp.write_text(base)
    fast = local("plan", exp)
    exp.write_text(base + "links: {mpi_gbps: 0.001}\n")
    slow = local("plan", exp)
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    assert "network link: 0.001 GB/s" in slow.stdout and "network link" not in fast.stdout
    comm = lambda out: float(out.split("stage 0")[1].split("comm ")[1].split(";")[0])
    assert comm(slow.stdout) > 10 * comm(fast.stdout)
    # ...and under measured it is allowed: it states the link, recorded in the run's params.
    exp.write_text(base.replace("[modeled]", "[measured]") + "links: {mpi_gbps: 12.5}\n")
    out = tmp_path / "n.h5"
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        (g,) = f["runs"].values()
        assert g["params"].attrs["links.mpi_gbps"] == "12.5"
        assert g.attrs["time_model"] == "measured"
