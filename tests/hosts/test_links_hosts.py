"""§2 of issue 15: a link with a real bandwidth. The experiment file states the network link
(links.mpi_gbps); the test bed shapes every host's link to it (testbed.sh shape-from); under
`measured` time the wall clock shows the paper's effect: throughput rises with R and the
communication in the breakdown shrinks. The `modeled` time model, from a profile calibrated on
this host and the same link rate, predicts the measured throughput within 15%."""
import statistics

import h5py
import pytest

from hostbed import HERE, QUILT, ENV, down, quilt_on_hosts, runs, testbed, up
import subprocess

FILE = HERE / "shaped_link.yaml"


@pytest.fixture(scope="module", autouse=True)
def bed():
    up(2)
    yield
    down()


def by_rate(path):
    """{rate: (attributes, stage 0 send wait s, stage 1 recv wait s, params)}"""
    out = {}
    with h5py.File(path, "r") as f:
        for rid in f["runs"]:
            g = f["runs"][rid]
            rate = float(g["params"].attrs["autoencoder.rate"])
            out[rate] = (dict(g.attrs), statistics.median(g["stages"]["0"]["send_wait_s"][()]),
                         statistics.median(g["stages"]["1"]["recv_wait_s"][()]),
                         dict(g["params"].attrs))
    return out


def test_shaped_link_shows_the_effect_of_r_and_matches_the_time_model(tmp_path):
    # The link the file states is the link the run gets, and the file records it.
    r = testbed("shape-from", FILE)
    assert "0.01 GB/s" in r.stdout, r.stdout
    assert "rate 80Mbit" in testbed("status").stdout

    measured = tmp_path / "measured.h5"
    r = quilt_on_hosts(2, "run", FILE, "--scale", "measured", "--output", measured)
    assert r.returncode == 0, r.stdout + r.stderr
    m = by_rate(measured)
    for a, *_ , params in m.values():
        assert a["status"] == "ok" and a["max_abs_error"] >= 0
        assert params["links.mpi_gbps"] == "0.01"

    # The same runs predicted: a profile calibrated here now, the same link rate.
    profile = tmp_path / "cal.yaml"
    c = subprocess.run([str(QUILT), "calibrate", "resnet18", "--input", "3,64,64", "--batch", "8",
                        "--repeats", "5", "--profile", "cpu", "--output", str(profile)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert c.returncode == 0, c.stdout + c.stderr
    exp = tmp_path / "modeled.yaml"
    exp.write_text(FILE.read_text().replace("boards.profile: cpu", f"boards.profile: {profile}"))
    modeled = tmp_path / "modeled.h5"
    r = quilt_on_hosts(2, "run", exp, "--scale", "modeled", "--output", modeled)
    assert r.returncode == 0, r.stdout + r.stderr
    p = by_rate(modeled)

    tm = {rate: m[rate][0]["throughput_sps"] for rate in m}
    tp = {rate: p[rate][0]["throughput_sps"] for rate in p}
    print(f"measured samples/s {tm}, modeled {tp}; stage 0 send wait s "
          f"{ {k: v[1] for k, v in m.items()} }, stage 1 recv wait s { {k: v[2] for k, v in m.items()} }")
    # Throughput rises with R, measurably.
    assert tm[64.0] > 1.5 * tm[1.0]
    # Communication in the breakdown shrinks: the sender waits on the link, the receiver on data.
    assert m[64.0][1] < 0.5 * m[1.0][1]
    assert m[64.0][2] < m[1.0][2]
    # The measured wall clock agrees with the model of the same link.
    for rate in (1.0, 64.0):
        assert abs(tm[rate] - tp[rate]) <= 0.15 * tp[rate], (rate, tm[rate], tp[rate])
