"""analysis/fig5_efficiency.py and analysis/fig6_breakdown.py on small synthetic result files laid
out as results/SCHEMA.md says (only what the scripts read)."""
import csv
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))
import fig5_efficiency  # noqa: E402
import fig6_breakdown  # noqa: E402

STR = h5py.string_dtype("utf-8")


def write(path, runs):
    """runs: list of dicts with arch, rate, sps, energy, status, stages [(compute, h2d, d2h)]."""
    with h5py.File(path, "w") as f:
        f.attrs["quilt_format"] = "quilt-results"
        f.attrs["schema_version"] = np.int64(1)
        for i, r in enumerate(runs):
            g = f.create_group(f"runs/run{i:02d}")
            g.attrs["status"] = r.get("status", "ok")
            g.attrs["complete"] = np.int64(1)
            g.attrs["throughput_sps"] = np.float64(r["sps"])
            g.attrs["energy_per_sample_j"] = np.float64(r.get("energy", -1))
            g.attrs["time_model"] = "modeled"
            p = g.create_group("params")
            p.attrs["model.arch"] = r["arch"]
            p.attrs["autoencoder.rate"] = str(r["rate"])
            g.create_dataset("cut_names", data=np.array(["after_x"], dtype=object), dtype=STR)
            for k, (c, h, d) in enumerate(r.get("stages", [])):
                s = g.create_group(f"stages/{k}")
                s.attrs["units"] = f"u{k}"
                for name, v in (("compute_s", c), ("h2d_s", h), ("d2h_s", d),
                                ("recv_wait_s", 0.0), ("send_wait_s", 0.0)):
                    s.create_dataset(name, data=np.full(4, v))


def test_fig5_gains_against_the_baseline_and_the_paper(tmp_path):
    path = tmp_path / "efficiency.h5"
    write(path, [
        dict(arch="resnet50", rate=1, sps=100, energy=2.0),
        dict(arch="resnet50", rate=64, sps=125, energy=1.6),
        dict(arch="unet", rate=1, sps=10, energy=20.0),
        dict(arch="unet", rate=7.5, sps=13, energy=16.0),
        dict(arch="unet", rate=120, sps=0, status="failed"),
    ])
    assert fig5_efficiency.main([str(path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "fig5_efficiency.csv")))
    by = {(r["model"], float(r["rate"])): r for r in rows}
    assert float(by[("resnet50", 64.0)]["throughput_gain_pct"]) == pytest.approx(25.0)
    assert float(by[("resnet50", 64.0)]["energy_gain_pct"]) == pytest.approx(25.0)
    assert float(by[("resnet50", 64.0)]["paper_throughput_gain_pct"]) == 20.8
    assert float(by[("unet", 7.5)]["throughput_gain_pct"]) == pytest.approx(30.0)
    assert float(by[("unet", 7.5)]["paper_energy_gain_pct"]) == 28.4
    text = (tmp_path / "fig5_efficiency.txt").read_text()
    assert "1 run(s) failed" in text and "UNet R=120" in text  # the failed run is left out
    assert (tmp_path / "fig5_efficiency.png").stat().st_size > 1000


def test_fig6_compute_communication_and_autoencoder_overhead(tmp_path):
    path = tmp_path / "breakdown.h5"
    write(path, [
        dict(arch="resnet50", rate=1, sps=100, stages=[(1.0e-3, 1e-4, 1e-4), (0.5e-3, 1e-4, 0)]),
        dict(arch="resnet50", rate=64, sps=120,
             stages=[(1.001e-3, 1e-4, 2e-6), (0.5005e-3, 2e-6, 0)]),
    ])
    assert fig6_breakdown.main([str(path)]) == 0
    rows = list(csv.reader(open(tmp_path / "fig6_breakdown.csv")))[1:]
    assert len(rows) == 4
    assert float(rows[0][5]) == pytest.approx(2e-4)  # h2d + d2h of stage 0 at R=1
    text = (tmp_path / "fig6_breakdown.txt").read_text()
    assert "+0.100% of compute (shows the paper's bound)" in text


@pytest.mark.parametrize("script", [fig5_efficiency, fig6_breakdown])
def test_missing_or_foreign_files_exit_2(tmp_path, script, capsys):
    assert script.main([str(tmp_path / "nope.h5")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert script.main([str(bad)]) == 2
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["x"] = 1
    assert script.main([str(tmp_path / "other.h5")]) == 2
    assert "not a Quilt result file" in capsys.readouterr().err
