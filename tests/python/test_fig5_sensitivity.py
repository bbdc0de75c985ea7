"""analysis/fig5_sensitivity.py: the gain over compute x link x overhead, computed through the
cost model's Python bindings, checked against a hand computation of the steady-state period."""
import csv
import os
import sys
from pathlib import Path

import pytest

from conftest import BUILD  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))


@pytest.fixture(scope="module")
def sens():
    import fig5_sensitivity
    return fig5_sensitivity


def test_unet_crossing_tensors_carry_their_own_shapes(quilt, sens):
    after, layers, _ = sens.model_layers(quilt, "unet")
    down4 = next(l for l in layers if l["name"] == after["after_down4"])
    shapes = [c["shape"] for c in down4["crossing"]]
    assert len(shapes) == 5 and all(len(s) == 3 for s in shapes)  # C, H, W each, not packed
    s = quilt.summary("unet")
    cut = next(c for c in s["cuts"] if c["name"] == "after_down4")
    assert sum(4 * c * h * w for c, h, w in shapes) == cut["bytes_per_sample"]


def test_period_is_the_slowest_stage_or_hop(quilt, sens):
    after, layers, input_bytes = sens.model_layers(quilt, "resnet50")
    b = sens.board(quilt, 4e12, 9.2, 10e-6, 50e-6)
    cut = after["after_layer3"]
    c = quilt.stage_costs(layers, b, [cut], batch=1, input_bytes=input_bytes, rate=1.0)
    s0, s1 = c["stages"]
    # By hand: stage 1 receives the 802,816-byte cut tensor over H2D at 9.2 GB/s + 10 us.
    assert s1["h2d_s"] == pytest.approx(10e-6 + 802816 / 9.2e9, rel=1e-9)
    expect = max(s0["h2d_s"] + s0["compute_s"] + s0["d2h_s"],
                 s1["h2d_s"] + s1["compute_s"] + s1["d2h_s"], s0["mpi_s"])
    assert sens.period_s(quilt, layers, input_bytes, cut, 1.0, b) == pytest.approx(expect)
    # R=64 moves 64x fewer bytes, so it can only be faster when compute is held equal... unless
    # the autoencoder's own compute outweighs it; on a very slow link it must be faster.
    slow = sens.board(quilt, 4e12, 0.1, 10e-6, 50e-6)
    assert (sens.period_s(quilt, layers, input_bytes, cut, 64.0, slow) <
            sens.period_s(quilt, layers, input_bytes, cut, 1.0, slow))


def test_script_writes_figures_table_and_csv(quilt, sens, tmp_path):
    assert sens.main(["--out", str(tmp_path), "--points", "3", "--overheads-us", "10"]) == 0
    for name in ("fig5_sensitivity.png", "fig5_sensitivity_cut.png"):
        assert (tmp_path / name).stat().st_size > 5000
    rows = list(csv.DictReader(open(tmp_path / "fig5_sensitivity.csv")))
    assert len(rows) == 3 * 3 * 3  # models x compute x link, one overhead
    assert {r["model"] for r in rows} == {"resnet50", "unet", "efficientnet_b0"}
    text = (tmp_path / "fig5_sensitivity.txt").read_text()
    assert "documented U200 point: 4.32 TOPS" in text
    assert "Cut choice" in text
    assert text.count("SHOWS") + text.count("DOES NOT SHOW") == 4  # one verdict per objective x candidates


def test_bad_arguments_exit_2(sens):
    with pytest.raises(SystemExit) as e:
        sens.main(["--points", "1"])
    assert e.value.code == 2
