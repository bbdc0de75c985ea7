"""§2 of issue 15: a link with a real bandwidth. The experiment file states the network link
(links.mpi_gbps); the test bed shapes every host's link to it (testbed.sh shape-from); under
`measured` time the wall clock shows the paper's effect: throughput rises with R and the
communication in the breakdown shrinks. The `modeled` time model, given the same link rate and
this host's compute, predicts the measured throughput within 15%.

"This host's compute": a profile calibrated here (`quilt calibrate`), rescaled by how much slower
or faster the slowest board actually computed during the measured R=64 run than the calibration
predicts (the machine is shared; its load changes several-fold within a minute). The link-bound
R=1 run then tests the link model against tbf and TCP; the compute-bound R=64 run the model's
pipeline schedule (overlap, double buffering) around a stage time it is given."""
import re
import statistics
import subprocess

import h5py
import pytest

from hostbed import ENV, HERE, QUILT, down, quilt_on_hosts, tb, up

FILE = HERE / "shaped_link.yaml"


@pytest.fixture(scope="module", autouse=True)
def bed():
    up(2)
    yield
    down()


def by_rate(path):
    """{rate: dict(attrs, params, send0 = stage 0 send wait, recv1 = stage 1 recv wait, compute =
    the slowest stage's mean compute s per batch)}"""
    out = {}
    with h5py.File(path, "r") as f:
        for rid in f["runs"]:
            g = f["runs"][rid]
            st = g["stages"]
            out[float(g["params"].attrs["autoencoder.rate"])] = dict(
                attrs=dict(g.attrs), params=dict(g["params"].attrs),
                send0=statistics.median(st["0"]["send_wait_s"][()]),
                recv1=statistics.median(st["1"]["recv_wait_s"][()]),
                # The mean, not the median: on a loaded machine the slow batches set the pace.
                compute=max(statistics.fmean(st[k]["compute_s"][()]) for k in st))
    return out


def modeled_run(tmp_path, profile_text, tag):
    profile = tmp_path / f"{tag}.yaml"
    profile.write_text(profile_text)
    exp = tmp_path / f"modeled-{tag}.yaml"
    exp.write_text(FILE.read_text().replace("boards.profile: cpu", f"boards.profile: {profile}"))
    out = tmp_path / f"modeled-{tag}.h5"
    r = quilt_on_hosts(2, "run", exp, "--scale", "modeled", "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return by_rate(out)


def rescaled(profile_text, factor):
    """The profile with its compute `factor` times slower (peak FLOP/s and overhead)."""
    def scale(key, f):
        nonlocal profile_text
        m = re.search(rf"^{key}: *([0-9.eE+-]+)$", profile_text, re.M)
        assert m, f"no {key} in the calibrated profile"
        profile_text = profile_text.replace(m.group(0), f"{key}: {float(m.group(1)) * f!r}")
    scale("peak_flops", 1 / factor)
    scale("overhead_s", factor)
    return profile_text


def test_shaped_link_shows_the_effect_of_r_and_matches_the_time_model(tmp_path):
    # The link the file states is the link the run gets, and the file records it.
    r = tb("shape-from", FILE)
    assert "0.002 GB/s" in r.stdout, r.stdout
    assert "rate 16Mbit" in tb("status").stdout

    c = subprocess.run([str(QUILT), "calibrate", "resnet18", "--input", "3,64,64", "--batch", "8",
                        "--repeats", "5", "--profile", "cpu", "--output", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert c.returncode == 0, c.stdout + c.stderr
    calibrated = (tmp_path / "c.yaml").read_text()

    measured = tmp_path / "measured.h5"
    r = quilt_on_hosts(2, "run", FILE, "--scale", "measured", "--output", measured)
    assert r.returncode == 0, r.stdout + r.stderr
    m = by_rate(measured)
    for run in m.values():
        assert run["attrs"]["status"] == "ok" and run["attrs"]["max_abs_error"] >= 0
        assert run["params"]["links.mpi_gbps"] == "0.002"

    first = modeled_run(tmp_path, calibrated, "calibrated")
    load = m[64.0]["compute"] / first[64.0]["compute"]
    p = modeled_run(tmp_path, rescaled(calibrated, load), "rescaled")

    tm = {k: v["attrs"]["throughput_sps"] for k, v in m.items()}
    tp = {k: v["attrs"]["throughput_sps"] for k, v in p.items()}
    print(f"measured samples/s {tm}; modeled {tp} (slowest stage's compute x{load:.2f} the calibration's; "
          f"as calibrated: { {k: v['attrs']['throughput_sps'] for k, v in first.items()} }); "
          f"stage 0 send wait s { {k: v['send0'] for k, v in m.items()} }, "
          f"stage 1 recv wait s { {k: v['recv1'] for k, v in m.items()} }")
    # Throughput rises with R, measurably.
    assert tm[64.0] > 1.5 * tm[1.0]
    # Communication in the breakdown shrinks: the receiver waits for data far less.
    assert m[64.0]["recv1"] < 0.5 * m[1.0]["recv1"]
    # The measured wall clock agrees with the model of the same link.
    for rate in (1.0, 64.0):
        assert abs(tm[rate] - tp[rate]) <= 0.15 * tp[rate], (rate, tm[rate], tp[rate])
