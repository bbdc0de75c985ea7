"""Training runs end to end: `quilt run` under mpiexec with training.mode set, on one and two
ranks (data parallel), the records of results/SCHEMA.md (/runs/<id>/training) checked with
h5py; failures (NaN loss, missing data, a checkpoint of another model) recorded with their reason
while the sweep goes on; --resume; the proxy and weight freezing with pretraining. Tiny MLPs on
synthetic and UCI data, a few epochs, so the whole file takes well under a minute of CPU."""
import functools
import math
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from conftest import BUILD, ENV, local_quilt as local, mpi_quilt, requires_build  # noqa: E402

pytestmark = requires_build

BASE = """quilt: 1
name: train
model: {arch: mlp, input: [16], classes: 4}
data: {kind: synthetic, seed: 3}
boards: {count: RANKS}
partition: {cuts: [after_hidden1]}
autoencoder: {rate: 8}
training: {mode: scratch, epochs: 3, batch: 32, lr: 0.01, optimizer: adam}
sweep:
  matrix:
    autoencoder.rate: [1, 8]
"""


quilt = functools.partial(mpi_quilt, ranks=1, timeout=300)


def experiment(tmp_path, text=BASE, ranks=1, name="exp.yaml", **subs):
    text = text.replace("RANKS", str(ranks))
    for k, v in subs.items():
        text = text.replace(k, str(v))
    p = tmp_path / name
    p.write_text(text)
    return p


def run_ok(tmp_path, text=BASE, out="o.h5"):
    """`quilt run` (one rank) of the experiment `text` into tmp_path / out, which must succeed;
    returns the output's path."""
    out = tmp_path / out
    r = quilt("run", experiment(tmp_path, text), "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def runs(path):
    """[(id, attrs, params, training attrs or None, training datasets or None)] in run order."""
    out = []
    with h5py.File(path, "r") as f:
        for rid in (s(x) for x in f["run_order"][()]):
            g = f["runs"][rid]
            params = {k: s(v) for k, v in g["params"].attrs.items()}
            t = g.get("training")
            tattrs = {k: (s(v) if isinstance(v, (str, bytes)) else v) for k, v in t.attrs.items()} \
                if t is not None else None
            tdata = {k: ([s(x) for x in t[k][()]] if k == "phase" else t[k][()]) for k in t} \
                if t is not None else None
            out.append((rid, dict(g.attrs), params, tattrs, tdata))
    return out


@pytest.mark.parametrize("ranks", [1, 2])
def test_scratch_runs_write_the_documented_records(tmp_path, ranks):
    out = tmp_path / "o.h5"
    r = quilt("run", experiment(tmp_path, ranks=ranks), "--output", out, ranks=ranks)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "top-1" in r.stdout
    rs = runs(out)
    assert len(rs) == 2
    for rid, attrs, params, t, d in rs:
        assert s(attrs["status"]) == "ok" and attrs["complete"] == 1
        assert t["mode"] == "scratch" and t["dataset"] == "synthetic"
        assert t["ranks"] == ranks and t["global_batch"] == 32 and t["classes"] == 4
        assert "synthetic" in t["stand_in"]
        assert t["train_samples"] > 0 and t["test_samples"] > 0
        for name in ("epoch", "phase", "train_loss", "train_top1", "test_loss", "test_top1",
                     "test_top5", "epoch_s", "samples_per_s"):
            assert len(d[name]) == 3, name
        assert list(d["epoch"]) == [1, 2, 3] and d["phase"] == ["train"] * 3
        assert all(x > 0 for x in d["samples_per_s"]) and all(x > 0 for x in d["epoch_s"])
        assert 0 <= t["final_top1"] <= t["final_top5"] <= 1
        assert t["final_top1"] == d["test_top1"][-1]
        assert d["train_loss"][-1] < d["train_loss"][0]  # it learns
        assert t["final_top1"] > 0.4  # 4 classes: well above chance (0.25)
        assert t["proxy_speedup"] == -1 and math.isnan(t["pretrain_top1"])
    rep = local("report", out)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "training scratch: synthetic" in rep.stdout and "final top-1" in rep.stdout


def test_two_ranks_match_one_rank(tmp_path):
    """Data parallel: the global batch is split over the ranks and gradients averaged, so an MLP
    (no BatchNorm) follows the single-process run up to rounding. SGD, not Adam: Adam divides
    each update by the root of the squared gradients, which turns the rounding of the float32
    gradient sum (partial sums per rank vs one sum) into O(1) differences in parameters whose
    gradients are near zero, and those grow over epochs (0.8% after 3 epochs here), whereas SGD
    keeps them at rounding size."""
    finals = []
    sgd = BASE.replace("optimizer: adam", "optimizer: sgd, momentum: 0.9")
    for ranks in (1, 2):
        out = tmp_path / f"o{ranks}.h5"
        r = quilt("run", experiment(tmp_path, sgd, ranks=ranks, name=f"e{ranks}.yaml"),
                  "--output", out, "--run-index", 1, ranks=ranks)
        assert r.returncode == 0, r.stdout + r.stderr
        finals.append(runs(out)[0][4]["train_loss"])
    assert finals[0] == pytest.approx(finals[1], rel=1e-3)


def test_nan_loss_fails_its_run_and_the_sweep_goes_on(tmp_path):
    text = BASE.replace("autoencoder.rate: [1, 8]", "training.lr: [100, 0.01]").replace(
        "optimizer: adam", "optimizer: sgd, momentum: 0.9")
    out = tmp_path / "o.h5"
    r = quilt("run", experiment(tmp_path, text), "--output", out)
    assert r.returncode == 1, r.stdout + r.stderr  # a run failed: exit code 1, as pipeline runs
    (_, a0, p0, t0, _), (_, a1, p1, t1, _) = runs(out)
    assert p0["training.lr"] == "100" and s(a0["status"]) == "failed"
    assert "nan" in s(a0["failure"]).lower() or "inf" in s(a0["failure"]).lower()
    assert t0 is not None and t0["mode"] == "scratch"
    assert s(a1["status"]) == "ok" and t1["final_top1"] > 0.4
    assert "FAILED" in r.stdout


def test_missing_data_is_refused_or_recorded(tmp_path):
    # A path that does not exist: refused before anything runs (exit 2, names the key).
    text = BASE.replace("data: {kind: synthetic, seed: 3}",
                        f"data: {{kind: fashion-mnist, path: {tmp_path / 'nowhere'}}}")
    r = quilt("run", experiment(tmp_path, text), "--output", tmp_path / "a.h5")
    assert r.returncode == 2 and "data.path" in r.stderr and "nowhere" in r.stderr
    # A directory without the files: each run fails with the loader's reason naming the file.
    empty = tmp_path / "empty"
    empty.mkdir()
    text = BASE.replace("data: {kind: synthetic, seed: 3}",
                        f"data: {{kind: fashion-mnist, path: {empty}}}")
    out = tmp_path / "b.h5"
    r = quilt("run", experiment(tmp_path, text), "--output", out)
    assert r.returncode == 1, r.stdout + r.stderr
    for _, a, _, t, _ in runs(out):
        assert s(a["status"]) == "failed"
        assert str(empty) in s(a["failure"]) and "fashion-mnist" in s(a["failure"])


def test_checkpoint_of_another_model_fails_clearly(tmp_path):
    ck = tmp_path / "ck.pt"
    first = BASE.replace("lr: 0.01,", f"lr: 0.01, checkpoint: {ck},").replace(
        "sweep:\n  matrix:\n    autoencoder.rate: [1, 8]\n", "")
    r = quilt("run", experiment(tmp_path, first, name="a.yaml"), "--output", tmp_path / "a.h5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ck.exists()
    other = first.replace("input: [16]", "input: [12]")
    out = tmp_path / "b.h5"
    r = quilt("run", experiment(tmp_path, other, name="b.yaml"), "--output", out)
    assert r.returncode == 1, r.stdout + r.stderr
    (_, a, _, _, _), = runs(out)
    assert s(a["status"]) == "failed" and str(ck) in s(a["failure"]), s(a["failure"])


def test_swept_runs_need_their_own_checkpoint(tmp_path):
    text = BASE.replace("lr: 0.01,", f"lr: 0.01, checkpoint: {tmp_path / 'ck.pt'},")
    r = local("validate", experiment(tmp_path, text))
    assert r.returncode == 2 and "training.checkpoint" in r.stderr and "{id}" in r.stderr
    # Quoted: braces are YAML flow syntax.
    text = BASE.replace("lr: 0.01,", f"lr: 0.01, checkpoint: '{tmp_path / 'ck-{id}.pt'}',")
    out = run_ok(tmp_path, text)
    for rid, _, _, t, _ in runs(out):
        assert t["checkpoint"] == str(tmp_path / f"ck-{rid}.pt") and Path(t["checkpoint"]).exists()


def test_freeze_without_autoencoder_is_refused(tmp_path):
    text = BASE.replace("mode: scratch", "mode: freeze").replace(
        "autoencoder.rate: [1, 8]", "model.seed: [1]").replace("rate: 8", "rate: 1")
    r = local("validate", experiment(tmp_path, text))
    assert r.returncode == 2 and "freeze" in r.stderr and "autoencoder.rate" in r.stderr


def test_resume_skips_finished_training_runs(tmp_path):
    exp = experiment(tmp_path)
    out = tmp_path / "o.h5"
    assert quilt("run", exp, "--output", out, "--run-index", 0).returncode == 0
    first = runs(out)[0]
    r = quilt("run", exp, "--output", out, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "complete in the file, skipped" in r.stdout
    rs = runs(out)
    assert len(rs) == 2 and rs[0][0] == first[0]
    assert rs[0][1]["start_unix_s"] == first[1]["start_unix_s"]  # kept, not rerun


def test_proxy_records_reconstruction_loss_and_cost(tmp_path):
    # With the convergence rule set file-wide, as tradeoff.yaml's `here` scale does for its
    # scratch arms: the proxy's pricing epoch must not inherit it (it failed every proxy run).
    text = BASE.replace("mode: scratch", "mode: proxy").replace(
        "autoencoder.rate: [1, 8]", "autoencoder.rate: [2, 16]").replace(
        "epochs: 3,", "epochs: 3, converge_window: 2,")
    out = run_ok(tmp_path, text)
    rs = runs(out)
    losses = []
    for _, a, _, t, d in rs:
        assert t["mode"] == "proxy" and d["phase"] == ["proxy"] * 3
        assert all(math.isnan(x) for x in d["test_top1"])
        assert t["final_test_loss"] == d["test_loss"][-1] > 0
        assert t["full_epoch_s"] > 0 and t["proxy_speedup"] > 0
        losses.append(t["final_test_loss"])
    assert losses[0] < losses[1]  # R=2 reconstructs better than R=16


def test_weight_freezing_with_pretraining(tmp_path):
    text = BASE.replace(
        "training: {mode: scratch, epochs: 3, batch: 32, lr: 0.01, optimizer: adam}",
        "training: {mode: freeze, epochs: 3, freeze_epochs: 1, pretrain_epochs: 2, batch: 32, "
        "lr: 0.01, optimizer: adam}").replace(
        "autoencoder.rate: [1, 8]", "training.mode: [freeze, finetune]").replace(
        "data: {kind: synthetic, seed: 3}", "data: {kind: synthetic, seed: 3, train_samples: 200}")
    out = run_ok(tmp_path, text)
    (_, _, _, f, fd), (_, _, _, u, ud) = runs(out)
    assert fd["phase"] == ["freeze", "unfreeze", "unfreeze"] and f["phase1_epochs"] == 1
    assert ud["phase"] == ["train"] * 3 and u["phase1_epochs"] == 1
    assert f["train_samples"] == 200
    assert "in this run" in f["pretrained"] and "loaded from" in u["pretrained"]
    assert f["pretrain_top1"] == u["pretrain_top1"] > 0.4
    assert list((tmp_path / ".quilt-cache").glob("pretrained-*.pt"))


def test_python_module_reads_training_records(tmp_path):
    mod = Path(BUILD) / "python"
    if not list(mod.glob("quilt/_core*.so")):
        pytest.skip("the Python module is not built")
    out = tmp_path / "o.h5"
    assert quilt("run", experiment(tmp_path), "--output", out, "--run-index", 1).returncode == 0
    code = ("import sys, quilt; d = quilt.read_results(sys.argv[1]); t = d['runs'][0]['training'];"
            "print(t['mode'], len(t['epoch']), t['phase'][0], round(t['final_top1'], 6))")
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                       env=dict(ENV, PYTHONPATH=str(mod)))
    assert r.returncode == 0, r.stderr
    mode, n, phase, top1 = r.stdout.split()
    assert (mode, n, phase) == ("scratch", "3", "train")
    assert float(top1) == pytest.approx(runs(out)[0][3]["final_top1"], abs=1e-6)


def test_trained_weights_feed_pipeline_runs(tmp_path):
    """A training run saves its weights (base and autoencoders); a pipeline run of the same model,
    cuts and rate loads them through model.weights; another rate is refused with the key."""
    exp = experiment(tmp_path, BASE.replace("""sweep:
  matrix:
    autoencoder.rate: [1, 8]
""", ""))
    out = tmp_path / "t.h5"
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    ((_, attrs, params, _, _),) = runs(out)
    weights = Path(params["training.saved_weights"])
    assert weights.exists() and weights.parent.name == "t.weights"
    pipeline = f"""quilt: 1
name: serve
model: {{arch: mlp, input: [16], classes: 4, weights: {weights}}}
boards: {{count: 2}}
partition: {{cuts: [after_hidden1]}}
measurement: {{batch: 4, warmup_batches: 1, batches: 3}}
sweep:
  matrix:
    autoencoder.rate: [8, 4]
"""
    exp2 = experiment(tmp_path, pipeline, name="serve.yaml")
    r = quilt("run", exp2, "--output", tmp_path / "s.h5", ranks=2)
    assert r.returncode == 1, r.stdout + r.stderr  # the R=4 run cannot take R=8 weights
    (ok_run, bad_run) = runs(tmp_path / "s.h5")
    assert ok_run[2]["autoencoder.rate"] == "8" and s(ok_run[1]["status"]) == "ok"
    assert ok_run[1]["max_abs_error"] >= 0  # outputs checked against the single-process model
    assert s(bad_run[1]["status"]) == "failed" and "ae_after_hidden1" in s(bad_run[1]["failure"])


def test_convergence_rule_stops_the_run_and_is_recorded(tmp_path):
    # A margin of 100 points is met as soon as the window is full: the run stops at epoch 3 of
    # at most 20. A margin of 0 is met only by identical accuracies: whatever the run did, the
    # record must agree with its own epochs.
    text = BASE.replace("epochs: 3,", "epochs: 20, converge_window: 3, converge_margin_pt: 100,")
    text = text.replace("autoencoder.rate: [1, 8]", "autoencoder.rate: [1, 8]\n"
                        "    training.converge_margin_pt: [100, 0]")
    out = run_ok(tmp_path, text)
    rs = runs(out)
    assert len(rs) == 4
    for _, _, params, t, d in rs:
        assert t["converge_window"] == 3
        top1 = list(d["test_top1"])
        if params["training.converge_margin_pt"] == "100":
            assert t["converged"] == 1 and len(top1) == 3, (t, top1)
            assert t["converge_margin_pt"] == 100
        else:
            flat = max(top1[-3:]) - min(top1[-3:]) <= 1e-12
            assert t["converged"] == (1 if flat else 0), (t, top1)
            assert len(top1) == 20 or flat
    rep = local("report", out)
    assert "converged: yes (rule: test top-1 of the last 3 epochs within 100 pt)" in rep.stdout


def test_with_a_hold_the_rule_judges_held_epochs_only(tmp_path):
    # Cosine over 3 epochs to 0.1 x lr, then at most 3 held epochs. A margin of 100 points is met
    # as soon as 2 held epochs exist: epoch 5, never inside the decay (epochs 1-3 may agree).
    # A margin of 0: the record agrees with the held epochs, and an unconverged run held all 3.
    text = BASE.replace("epochs: 3,", "epochs: 3, lr_schedule: cosine, lr_floor: 0.1, "
                        "hold_epochs: 3, converge_window: 2, converge_margin_pt: 100,")
    text = text.replace("autoencoder.rate: [1, 8]", "autoencoder.rate: [8]\n"
                        "    training.converge_margin_pt: [100, 0]")
    out = run_ok(tmp_path, text)
    rs = runs(out)
    assert len(rs) == 2
    for _, _, params, t, d in rs:
        assert params["training.hold_epochs"] == "3" and params["training.lr_floor"] == "0.1"
        top1 = list(d["test_top1"])
        if params["training.converge_margin_pt"] == "100":
            assert t["converged"] == 1 and len(top1) == 5, (t, top1)
        else:
            flat = len(top1) >= 5 and top1[-1] == top1[-2]
            assert t["converged"] == (1 if flat else 0), (t, top1)
            assert len(top1) == 6 or flat


def test_runs_without_the_rule_record_minus_one(tmp_path):
    out = tmp_path / "o.h5"
    assert quilt("run", experiment(tmp_path), "--output", out).returncode == 0
    for _, _, _, t, _ in runs(out):
        assert t["converged"] == -1 and t["converge_window"] == 0
        assert math.isnan(t["converge_margin_pt"])


def test_training_seed_repeats_an_arm_on_the_same_split(tmp_path):
    # training.seed moves weights and shuffling, not the data: the same split, other curves;
    # model.seed still moves the initialisation under the same training.seed.
    text = BASE.replace("sweep:\n  matrix:\n    autoencoder.rate: [1, 8]",
                        "sweep:\n  zip:\n    training.seed: [1, 2, 1]\n    model.seed: [0, 0, 5]")
    out = run_ok(tmp_path, text)
    (_, _, p1, t1, d1), (_, _, p2, t2, d2), (_, _, _, _, d3) = runs(out)
    assert p1["training.seed"] == "1" and p2["training.seed"] == "2"
    assert t1["test_samples"] == t2["test_samples"] and t1["train_samples"] == t2["train_samples"]
    assert list(d1["train_loss"]) != list(d2["train_loss"])
    assert list(d1["train_loss"]) != list(d3["train_loss"])


def test_training_reports_accuracy_in_the_boards_precision(tmp_path):
    # boards.precision int8: the trained model compiled in int8 on the test set, against fp32.
    text = BASE.replace("boards: {count: RANKS}",
                        "boards: {count: RANKS, precision: int8, calibration_batches: 2}")
    out = run_ok(tmp_path, text, "p.h5")
    got = runs(out)
    assert len(got) == 2
    for _, attrs, params, tr, _ in got:
        assert s(attrs["status"]) == "ok", s(attrs["failure"])
        assert s(tr["precision"]) == "int8"
        assert 0.0 <= tr["precision_top1"] <= 1.0
        # int8 agrees with fp32 on most of the test set; accuracy near fp32's.
        assert tr["precision_agreement"] >= 0.8
        assert abs(tr["precision_top1"] - tr["final_top1"]) <= 0.2
    rep = local("report", out)
    assert rep.returncode == 0, rep.stderr
    assert "top-1 agreement with fp32" in rep.stdout


def test_narrow_resnet_trains_pretrains_per_width_and_serves(tmp_path):
    """model.width: a quarter- and a half-width ResNet-18 (16..128 / 32..256 channels) pretrain,
    get an R=64 autoencoder after layer3 (1 / 2 code channels) and retrain with freezing; the
    width is recorded, each width pretrains its own cached base, and the trained weights serve a
    2-board pipeline run of the same width through the emulator's fast path."""
    text = """quilt: 1
name: narrow
model: {arch: resnet18, input: [1, 28, 28], classes: 4}
data: {kind: synthetic, seed: 3, train_samples: 96}
partition: {cuts: [after_layer3]}
autoencoder: {rate: 64}
training: {mode: freeze, epochs: 2, freeze_epochs: 1, pretrain_epochs: 1, batch: 32, lr: 0.01,
           optimizer: adam, test_samples: 64}
sweep:
  matrix:
    model.width: [0.25, 0.5]
"""
    out = run_ok(tmp_path, text, "n.h5")
    rs = runs(out)
    assert [p["model.width"] for _, _, p, _, _ in rs] == ["0.25", "0.5"]
    for _, attrs, _, t, d in rs:
        assert s(attrs["status"]) == "ok", attrs.get("failure")
        assert d["phase"] == ["freeze", "unfreeze"] and "in this run" in t["pretrained"]
    assert len(list((tmp_path / ".quilt-cache").glob("pretrained-*.pt"))) == 2
    weights = rs[0][2]["training.saved_weights"]
    serve = f"""quilt: 1
name: serve
model: {{arch: resnet18, input: [1, 28, 28], classes: 4, width: 0.25, weights: {weights}}}
boards: {{count: 2}}
partition: {{cuts: [after_layer3]}}
autoencoder: {{rate: 64}}
measurement: {{batch: 4, warmup_batches: 1, batches: 3}}
"""
    r = quilt("run", experiment(tmp_path, serve, name="serve.yaml"), "--output",
              tmp_path / "s.h5", ranks=2)
    assert r.returncode == 0, r.stdout + r.stderr
    ((_, attrs, params, _, _),) = runs(tmp_path / "s.h5")
    assert s(attrs["status"]) == "ok" and params["model.width"] == "0.25"
    assert attrs["max_abs_error"] >= 0  # checked against the single-process model
