"""The accuracy-side analysis scripts (analysis/fig2_feasibility.py, table1_accuracy.py,
table2_fig7_weight_freezing.py, fig4_tradeoff.py, table3_interposition_accuracy.py) on small
generated result files laid out as results/SCHEMA.md says (training runs with their
/runs/<id>/training group)."""
import csv
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS = ROOT / "analysis"
STR = h5py.string_dtype("utf-8")


def write_file(path, runs, pipeline=()):
    """runs: dicts with params (dict), mode, top1 (per epoch list), loss (per epoch), status,
    and optional extras (training attributes). pipeline: (rate, throughput) pipeline runs."""
    with h5py.File(path, "w") as f:
        f.attrs["quilt_format"] = "quilt-results"
        f.attrs["schema_version"] = np.int64(1)
        f.attrs["name"] = Path(path).stem
        f.create_group("runs")
        ids = []
        for i, r in enumerate(runs):
            rid = f"t{i:02d}"
            ids.append(rid)
            g = f.create_group(f"runs/{rid}")
            g.attrs["status"] = r.get("status", "ok")
            g.attrs["failure"] = r.get("failure", "")
            g.attrs["throughput_sps"] = 0.0
            p = g.create_group("params")
            for k, v in r["params"].items():
                p.attrs[k] = str(v)
            t = g.create_group("training")
            top1 = np.array(r.get("top1", []), float)
            loss = np.array(r.get("loss", []), float)
            n = len(loss)
            t.attrs["mode"] = r["mode"]
            t.attrs["dataset"] = r["params"].get("data.kind", "synthetic")
            t.attrs["stand_in"] = r.get("stand_in", "")
            t.attrs["final_top1"] = top1[-1] if len(top1) else np.nan
            t.attrs["final_top5"] = top1[-1] if len(top1) else np.nan
            t.attrs["final_test_loss"] = loss[-1] if n else np.nan
            t.attrs["train_s"] = r.get("train_s", 10.0)
            t.attrs["proxy_speedup"] = r.get("proxy_speedup", -1.0)
            t.attrs["phase1_epochs"] = np.int64(r.get("phase1_epochs", 0))
            t.attrs["pretrain_top1"] = r.get("pretrain_top1", np.nan)
            t.create_dataset("epoch", data=np.arange(1, n + 1, dtype=np.int64))
            t.create_dataset("phase", data=np.array([r.get("phase", "train")] * n, dtype=object),
                             dtype=STR)
            for name, data in (("train_loss", loss), ("test_loss", loss),
                               ("train_top1", top1 if len(top1) else np.full(n, np.nan)),
                               ("test_top1", top1 if len(top1) else np.full(n, np.nan)),
                               ("test_top5", top1 if len(top1) else np.full(n, np.nan)),
                               ("epoch_s", np.ones(n)), ("samples_per_s", np.ones(n))):
                t.create_dataset(name, data=np.asarray(data, float))
            g.attrs["complete"] = np.int64(1)
        for j, (rate, sps) in enumerate(pipeline):
            rid = f"p{j:02d}"
            ids.append(rid)
            g = f.create_group(f"runs/{rid}")
            g.attrs["status"] = "ok"
            g.attrs["throughput_sps"] = float(sps)
            g.create_group("params").attrs["autoencoder.rate"] = str(rate)
            g.attrs["complete"] = np.int64(1)
        f.create_dataset("run_order", data=np.array(ids, dtype=object), dtype=STR)


def script(name, *args):
    return subprocess.run([sys.executable, str(ANALYSIS / name), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fig2_feasibility(tmp_path):
    runs = []
    for kind, base, quilt in (("uci-iris", 0.95, 0.94), ("uci-wine", 0.97, 0.97),
                              ("uci-breast-cancer", 0.96, 0.95), ("uci-digits", 0.97, 0.96)):
        for rate, acc in ((1, base), (512, quilt)):
            runs.append({"params": {"data.kind": kind, "autoencoder.rate": rate},
                         "mode": "scratch", "top1": [0.5, acc], "loss": [1.0, 0.1]})
    runs.append({"params": {"data.kind": "uci-wine", "autoencoder.rate": 512}, "mode": "scratch",
                 "status": "failed", "failure": "loss became NaN"})
    out = tmp_path / "feasibility.h5"
    write_file(out, runs)
    r = script("fig2_feasibility.py", out)
    assert r.returncode == 0, r.stderr
    assert "-0.75 pt" in r.stdout  # mean of -1, 0, -1, -1
    assert "SHOWS" in r.stdout and "-0.05" in r.stdout
    assert "loss became NaN" in r.stdout
    rows = csv_rows(tmp_path / "fig2_feasibility.csv")
    assert [x["data_set"] for x in rows] == ["uci-breast-cancer", "uci-digits", "uci-iris",
                                             "uci-wine"]
    assert abs(float(rows[2]["diff_pt"]) + 1.0) < 1e-9
    assert (tmp_path / "fig2_feasibility.png").stat().st_size > 1000
    assert (tmp_path / "fig2_feasibility.txt").read_text().startswith("Fig. 2a")


def test_table1_accuracy_says_when_the_effect_does_not_show(tmp_path):
    out = tmp_path / "accuracy.h5"
    write_file(out, [
        {"params": {"autoencoder.rate": 1, "model.arch": "resnet18"}, "mode": "scratch",
         "top1": [0.80, 0.90], "loss": [0.5, 0.3], "stand_in": "Fashion-MNIST instead of X"},
        {"params": {"autoencoder.rate": 64, "model.arch": "resnet18"}, "mode": "scratch",
         "top1": [0.70, 0.80], "loss": [0.7, 0.5]},
    ])
    r = script("table1_accuracy.py", out)
    assert r.returncode == 0, r.stderr
    assert "+10.00 pt" in r.stdout and "DOES NOT SHOW" in r.stdout
    assert "Fashion-MNIST instead of X" in r.stdout and "23.85" in r.stdout
    rows = csv_rows(tmp_path / "table1_accuracy.csv")
    assert abs(float(rows[1]["top1_error"]) - 0.2) < 1e-9
    assert (tmp_path / "table1_accuracy.png").exists()


def test_table2_fig7_weight_freezing(tmp_path):
    out = tmp_path / "weight_freezing.h5"
    p = {"autoencoder.rate": 64, "model.arch": "resnet18", "data.train_samples": 2000}
    write_file(out, [
        {"params": p, "mode": "freeze", "top1": [0.7, 0.8, 0.86], "loss": [1, 0.8, 0.5],
         "phase1_epochs": 1, "pretrain_top1": 0.9},
        {"params": p, "mode": "finetune", "top1": [0.3, 0.7, 0.84], "loss": [2, 1, 0.6]},
    ])
    r = script("table2_fig7_weight_freezing.py", out, "--out-dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "+2.00 pt" in r.stdout and "SHOWS" in r.stdout and "inside" in r.stdout
    assert "95.62" in r.stdout
    rows = csv_rows(tmp_path / "o" / "table2_fig7_weight_freezing.csv")
    assert abs(float(rows[0]["gain_pt"]) - 2.0) < 1e-9
    assert (tmp_path / "o" / "table2_fig7_weight_freezing.png").exists()


def test_fig4_tradeoff_with_efficiency(tmp_path):
    runs = [{"params": {"autoencoder.rate": 1}, "mode": "scratch", "top1": [0.9], "loss": [0.3]}]
    for rate, acc, mse in ((4, 0.9, 0.1), (16, 0.89, 0.2), (64, 0.88, 0.4), (256, 0.80, 0.9)):
        runs.append({"params": {"autoencoder.rate": rate}, "mode": "scratch", "top1": [acc],
                     "loss": [0.3]})
        runs.append({"params": {"autoencoder.rate": rate}, "mode": "proxy", "loss": [mse * 2, mse],
                     "proxy_speedup": 20.0, "phase": "proxy"})
    out = tmp_path / "tradeoff.h5"
    write_file(out, runs)
    eff = tmp_path / "efficiency.h5"
    write_file(eff, [], pipeline=[(1, 100.0), (16, 120.0), (64, 125.0)])
    r = script("fig4_tradeoff.py", out, "--efficiency", eff)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("SHOWS") == 4 and "DOES NOT" not in r.stdout, r.stdout
    assert "20.0x" in r.stdout and "76.9" in r.stdout
    rows = {float(x["rate"]): x for x in csv_rows(tmp_path / "fig4_tradeoff.csv")}
    assert abs(float(rows[64]["normalized_performance"]) - 1.25) < 1e-9
    assert abs(float(rows[64]["accuracy_loss_pt"]) - 2.0) < 1e-9
    assert abs(float(rows[256]["proxy_reconstruction_loss"]) - 0.9) < 1e-9
    assert (tmp_path / "fig4_tradeoff.png").exists()


def test_table3_interposition_accuracy(tmp_path):
    out = tmp_path / "interposition_accuracy.h5"
    runs = [{"params": {"autoencoder.rate": 1, "partition.cuts": "[after_layer1]"},
             "mode": "scratch", "top1": [0.9], "loss": [0.3]}]
    for cuts, acc in (("[after_layer1]", 0.89), ("[after_layer3]", 0.88),
                      ("[after_layer1, after_layer2, after_layer3]", 0.875)):
        runs.append({"params": {"autoencoder.rate": 64, "partition.cuts": cuts},
                     "mode": "scratch", "top1": [acc], "loss": [0.3]})
    write_file(out, runs)
    r = script("table3_interposition_accuracy.py", out)
    assert r.returncode == 0, r.stderr
    lines = {l.split("  ")[0]: l for l in r.stdout.splitlines()}
    assert "-1.00 pt" in lines["Between stage 1 & 2"] and "95.91" in lines["Between stage 1 & 2"]
    assert "not run" in lines["Between stage 2 & 3"]
    assert "-2.50 pt" in lines["Multi-AE"]
    assert "SHOWS" in r.stdout


def test_missing_file_is_exit_2(tmp_path):
    for name in ("fig2_feasibility.py", "table1_accuracy.py", "table2_fig7_weight_freezing.py",
                 "fig4_tradeoff.py", "table3_interposition_accuracy.py"):
        r = script(name, tmp_path / "nope.h5")
        assert r.returncode == 2 and "nope.h5" in r.stderr, (name, r.stderr)
