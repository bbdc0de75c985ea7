"""quilt.results (DataFrames), quilt.verdicts (the rules) and `quilt collect` / multi-file
`quilt report` on generated result files. Needs QUILT_BUILD_DIR (CTest sets it) with the package
<build>/python/quilt and <build>/bin/quilt built."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BUILD = Path(os.environ.get("QUILT_BUILD_DIR", Path(__file__).resolve().parents[2] / "build/release"))
sys.path.insert(0, str(BUILD / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import quilt  # noqa: E402
import quilt_files as qf  # noqa: E402
from quilt import results as qr  # noqa: E402
from quilt import verdicts as V  # noqa: E402

QUILT = BUILD / "bin" / "quilt"


@pytest.fixture
def files(tmp_path):
    eff = tmp_path / "eff.h5"
    qf.write(eff, [
        qf.pipeline(rate=1, sps=100.0, stages=[(0.010, 0.002, 0.001), (0.012, 0.001, 0.001)],
                    energy=0.5, checks=[("throughput_sps", True)]),
        qf.pipeline(rate=64, sps=125.0, stages=[(0.0101, 0.0001, 0.0), (0.012, 0.0, 0.001)],
                    energy=0.4, params={"boards.fallback": "true"}),
        qf.pipeline(arch="efficientnet_b0", rate=120, effective_rate=80, sps=90.0,
                    status="failed", failure="board lost"),
    ], name="efficiency")
    acc = tmp_path / "acc.h5"
    qf.write(acc, [
        qf.training(rate=1, top1=[0.5, 0.8, 0.9], loss=[1.0, 0.5, 0.3], classes=3,
                    params={"model.seed": 1, "partition.cuts": "[after_layer3]"}),
        qf.training(rate=64, top1=[0.4, 0.7, 0.85], loss=[1.1, 0.6, 0.4], classes=3,
                    params={"model.seed": 1, "partition.cuts": "[after_layer3]"}),
    ], name="accuracy")
    return eff, acc


def test_package_layout_reexports_the_extension():
    assert (BUILD / "python" / "quilt" / "__init__.py").exists()
    assert quilt._core.__name__ == "quilt._core"
    assert quilt.read_results is quilt._core.read_results
    assert "resnet50" in quilt.model_names()
    assert issubclass(quilt.ResultsError, OSError)


def test_runs_typed_columns_and_sources(files):
    eff, acc = files
    df = qr.runs([eff, acc])
    assert len(df) == 5
    assert list(df["file"]) == [str(eff)] * 3 + [str(acc)] * 2
    assert list(df["id"]) == ["r00", "r01", "r02", "r00", "r01"]
    # Parameters are typed: numbers are numbers, booleans booleans, lists stay text.
    assert pd.api.types.is_numeric_dtype(df["autoencoder.rate"])
    assert df["autoencoder.rate"].tolist() == [1, 64, 120, 1, 64]
    assert df.loc[1, "boards.fallback"] == True  # noqa: E712 (numpy bool)
    assert df.loc[3, "partition.cuts"] == "[after_layer3]"
    assert df.loc[1, "throughput_sps"] == 125.0
    assert df.loc[2, "status"] == "failed" and df.loc[2, "failure"] == "board lost"
    assert df.loc[2, "verdict"] == "FAILED" and df.loc[0, "verdict"] == "OK"
    assert df.loc[2, "effective_rate"] == 80 and df.loc[2, "requested_rate"] == 120
    assert df.loc[0, "energy_per_sample_j"] == 0.5 and math.isnan(df.loc[2, "energy_per_sample_j"])
    assert df.loc[0, "time_model"] == "modeled" and df.loc[0, "scale"] == "here"
    # Training runs: pipeline metrics empty, training results present.
    assert math.isnan(df.loc[3, "throughput_sps"])
    assert df.loc[4, "final_top1"] == pytest.approx(0.85)
    assert df.loc[4, "final_train_loss"] == pytest.approx(0.4)
    assert df.loc[4, "training_mode"] == "scratch" and df.loc[4, "epochs"] == 3
    assert df.loc[0, "training_mode"] == ""


def test_runs_accepts_glob_path_and_list(files, tmp_path):
    eff, acc = files
    assert len(qr.runs(str(tmp_path / "*.h5"))) == 5
    assert len(qr.runs(Path(eff))) == 3
    with pytest.raises(qr.InputError, match="no such file"):
        qr.runs(tmp_path / "missing.h5")
    with pytest.raises(qr.InputError, match="no file matches"):
        qr.runs(str(tmp_path / "nothing*.h5"))
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(qr.InputError, match="bad.h5"):
        qr.runs(bad)


def test_stages_epochs_batches(files):
    eff, acc = files
    st = qr.stages(eff)
    assert len(st) == 6  # three runs with two stages each (a failed run keeps its stages)
    s = st[(st["id"] == "r00") & (st["stage"] == 0)].iloc[0]
    assert s["compute_s"] == pytest.approx(0.010) and s["h2d_s"] == pytest.approx(0.002)
    assert s["predicted_exec_s"] == pytest.approx(0.013)
    assert s["autoencoder.rate"] == 1 and s["model.arch"] == "resnet50"
    ep = qr.epochs(acc)
    assert len(ep) == 6 and list(ep["epoch"][:3]) == [1, 2, 3]
    assert ep["test_top5"].isna().all()  # 3 classes: top-5 is not shown
    assert ep.loc[ep["id"] == "r01", "test_top1"].tolist() == pytest.approx([0.4, 0.7, 0.85])
    b = qr.batches(eff)
    assert len(b) == 3 * 2 * 4
    assert set(b.columns) >= {"compute_s", "recv_wait_s", "latency_s", "batch", "stage"}
    assert b[(b["id"] == "r01") & (b["stage"] == 1)]["d2h_s"].tolist() == [0.001] * 4


def test_events_wrapper(files):
    eff, _ = files
    if not hasattr(quilt._core, "read_events"):
        with pytest.raises(qr.InputError, match="read_events"):
            qr.events(eff, "r00")
        pytest.skip("this build has no quilt._core.read_events (timeline not merged)")
    with pytest.raises((qr.InputError, quilt.ResultsError)):
        qr.events(eff, "no-such-run")


def test_verdict_rules():
    # Difference claims: CI from Student t.
    e = V.estimate([2.0, 2.5, 3.0])
    assert e.mean == 2.5 and e.n == 3
    assert e.high - e.mean == pytest.approx(4.302653 * 0.5 / math.sqrt(3), rel=1e-5)
    assert V.difference("c", e, 1.69).verdict == V.SHOWS
    assert V.difference("c", e, -1.0).verdict == V.DOES_NOT_SHOW
    assert V.difference("c", V.estimate([-1.0, 2.0, 0.5]), 1.0).verdict == V.INCONCLUSIVE
    one = V.difference("c", V.estimate([5.0]), 1.0)
    assert one.verdict == V.INCONCLUSIVE and "1 seed" in one.line()
    det = V.difference("c", V.estimate([20.0], deterministic=True), 20.8)
    assert det.verdict == V.SHOWS and "degenerate" in det.line()
    # Negligible claims: equivalence within the margin.
    assert V.negligible("n", V.estimate([0.1, -0.1, 0.0]), 1.0, "-0.05").verdict == V.SHOWS
    assert V.negligible("n", V.estimate([5.0, 5.1, 4.9]), 1.0, "-0.05").verdict == V.DOES_NOT_SHOW
    assert V.negligible("n", V.estimate([0.5, 1.5, 1.0]), 1.0, "x").verdict == V.INCONCLUSIVE
    assert V.negligible("n", V.estimate([0.1], True), (None, 0.4), "x").verdict == V.SHOWS
    line = V.difference("claim", e, 1.69, "pt", converged="unknown").line()
    assert "±" in line and "3 seeds" in line and "paper +1.69 pt" in line and "unknown" in line
    # Paired by seed vs Welch.
    assert V.paired({1: 1.0, 2: 2.0}, {1: 2.0, 2: 3.5}).mean == pytest.approx(1.25)
    assert V.welch([1.0, 2.0], [2.0, 4.0]).mean == pytest.approx(1.5)
    assert V.converged_text([True, True]) == "yes" and V.converged_text([None]) == "unknown"
    # The count is of the runs that did not converge, and says so.
    assert V.converged_text([True, False, True]) == "no (1 of 3 runs not converged)"


@pytest.mark.skipif(not QUILT.exists(), reason="quilt binary not built")
def test_collect_csv_agrees_with_runs(files, tmp_path):
    eff, acc = files
    out = tmp_path / "table.csv"
    r = subprocess.run([str(QUILT), "collect", str(eff), str(acc), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    api = qr.runs([eff, acc])
    # The file read back with the API's dtypes, and with a plain pandas.read_csv.
    back = qr.frame_from_csv(out)
    pd.testing.assert_frame_equal(api, back)
    plain = pd.read_csv(out)
    assert list(plain.columns) == list(api.columns)
    for c in api.columns:
        if c in qr.TEXT_COLUMNS:
            continue
        a, b = api[c], plain[c]
        if pd.api.types.is_numeric_dtype(a):
            assert np.allclose(a.astype(float), b.astype(float), equal_nan=True), c
        else:
            assert a.fillna("").astype(str).tolist() == b.fillna("").astype(str).tolist(), c


@pytest.mark.skipif(not QUILT.exists(), reason="quilt binary not built")
def test_collect_and_report_errors(files, tmp_path):
    eff, _ = files
    r = subprocess.run([str(QUILT), "collect", str(eff)], capture_output=True, text=True)
    assert r.returncode == 2 and "-o" in r.stderr
    r = subprocess.run([str(QUILT), "collect", str(tmp_path / "none.h5"), "-o",
                        str(tmp_path / "t.csv")], capture_output=True, text=True)
    assert r.returncode == 2 and "none.h5" in r.stderr
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.skipif(not QUILT.exists(), reason="quilt binary not built")
def test_report_many_files_and_compare_by_params(files, tmp_path):
    eff, acc = files
    r = subprocess.run([str(QUILT), "report", str(eff), str(acc)], capture_output=True, text=True)
    assert r.returncode == 1  # one run failed
    assert "5 run(s) in 2 file(s)" in r.stdout
    assert "FAILED" in r.stdout and "board lost" in r.stdout and "top-1 85.00%" in r.stdout
    # A copy with R changed: runs pair by the parameters that vary, and the difference shows.
    other = tmp_path / "other.h5"
    qf.write(other, [qf.pipeline(rate=1, sps=110.0), qf.pipeline(rate=64, sps=150.0,
                                                               params={"boards.fallback": "true"}),
                     qf.pipeline(arch="efficientnet_b0", rate=120.0, sps=95.0)], name="other")
    r = subprocess.run([str(QUILT), "report", str(other), "--compare", str(eff)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "only in" not in r.stdout
    assert "1.200" in r.stdout  # 150 / 125, paired although "64" and "64" ids differ by file
    r = subprocess.run([str(QUILT), "report", str(other), "--compare", str(eff), "--by",
                        "model.arch"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "runs paired by model.arch" in r.stdout
    assert "differs: verdict: FAILED -> OK" in r.stdout
    # The case: a copy of a file with R changed pairs by what the sweep varies (the
    # model), and says that R differs.
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    qf.write(a, [qf.pipeline(arch=m, rate=64, sps=100.0,
                             params={"training.saved_weights": f"/x/{m}.pt"})
                 for m in ("resnet50", "unet")])
    qf.write(b, [qf.pipeline(arch=m, rate=32, sps=80.0,
                             params={"training.saved_weights": f"/y/{m}.pt"})
                 for m in ("resnet50", "unet")])
    r = subprocess.run([str(QUILT), "report", str(b), "--compare", str(a)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "runs paired by model.arch" in r.stdout and "only in" not in r.stdout
    assert r.stdout.count("differs: autoencoder.rate: 64 -> 32") == 2, r.stdout
    assert "0.800" in r.stdout and "saved_weights" not in r.stdout
    r = subprocess.run([str(QUILT), "report", str(other), "--compare", str(eff), "--by", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "'nope' is not a parameter" in r.stderr and "valid:" in r.stderr


@pytest.mark.skipif(not QUILT.exists(), reason="quilt binary not built")
def test_real_run_through_the_api(tmp_path):
    """A real 2-rank MLP pipeline (`quilt run` under mpiexec), read back as DataFrames, and the
    CSV of `quilt collect` equal to runs()."""
    exp = tmp_path / "tiny.yaml"
    exp.write_text("""quilt: 1
name: tiny
model: {arch: mlp, input: [16], classes: 4}
boards: {count: 2}
partition: {cuts: [after_hidden1]}
measurement: {batch: 4, warmup_batches: 1, batches: 3}
sweep:
  matrix:
    autoencoder.rate: [1, 8]
""")
    out = tmp_path / "tiny.h5"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
    r = subprocess.run([os.environ.get("MPIEXEC", "mpiexec"), "-n", "2", str(QUILT), "run",
                        str(exp), "--output", str(out)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    df = qr.runs(out)
    assert df["autoencoder.rate"].tolist() == [1, 8] and (df["status"] == "ok").all()
    assert (df["throughput_sps"] > 0).all() and df["effective_rate"].tolist() == [1, 8]
    assert df["model.arch"].tolist() == ["mlp", "mlp"] and df["stages"].tolist() == [2, 2]
    st = qr.stages(out)
    assert len(st) == 4 and (st["compute_s"] > 0).all()
    b = qr.batches(out)
    assert len(b) == 2 * 2 * 3 and (b["latency_s"] > 0).all()
    csv_path = tmp_path / "t.csv"
    assert subprocess.run([str(QUILT), "collect", str(out), "-o", str(csv_path)],
                          capture_output=True).returncode == 0
    pd.testing.assert_frame_equal(df, qr.frame_from_csv(csv_path))
