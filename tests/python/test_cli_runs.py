"""Runs that survive: resume, overwrite, failures recorded with rank and reason, fail-fast,
validity rules, references and `quilt report`, run indices and scales. Small MLP pipelines
under mpiexec; result files checked with h5py."""
import functools
import os
import subprocess

import h5py
import pytest

from conftest import ENV, MPIEXEC, QUILT, local_quilt as local, mpi_quilt, requires_build  # noqa: E402

pytestmark = requires_build

BASE = """quilt: 1
name: runs
model: {arch: mlp, input: [32], classes: 5, weights: WEIGHTS}
boards: {count: 3}
partition: {cuts: [after_hidden1, after_hidden2]}
autoencoder: {rate: 8}
measurement: {batch: 4, warmup_batches: 1, batches: 4, repetitions: 3}
sweep:
  matrix:
    model.seed: [1, 2, 3]
"""


quilt = functools.partial(mpi_quilt, ranks=3, timeout=180)


def experiment(tmp_path, text=BASE, weights="random", name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text.replace("WEIGHTS", str(weights)))
    return p


def runs(path):
    with h5py.File(path, "r") as f:
        order = [x.decode() if isinstance(x, bytes) else x for x in f["run_order"][()]]
        return [(i, dict(f["runs"][i].attrs)) for i in order]


def test_repetitions_give_statistics(tmp_path):
    out = tmp_path / "o.h5"
    # The load rules off: this test checks the statistics, on a host that may be busy.
    quiet = BASE.replace("repetitions: 3}", "repetitions: 3, max_cpu_wait: 0, max_cv: 0}")
    r = quilt("run", experiment(tmp_path, quiet), "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "95% CI" in r.stdout
    with h5py.File(out, "r") as f:
        for rid in f["runs"]:
            g = f["runs"][rid]
            assert g.attrs["repetitions"] == 3
            reps = g["repetition_throughput_sps"][()]
            assert len(reps) == 3 and all(reps > 0)
            assert g.attrs["throughput_ci95_low_sps"] <= g.attrs["throughput_mean_sps"] \
                <= g.attrs["throughput_ci95_high_sps"]
            assert len(g["latency_s"]) == 12
            assert len(g["stages"]["1"]["compute_s"]) == 12
            assert g.attrs["validity"] == "valid"


def test_existing_file_is_never_replaced_silently_and_resume_skips_done_runs(tmp_path):
    exp = experiment(tmp_path)
    out = tmp_path / "o.h5"
    assert quilt("run", exp, "--output", out, "--run-index", 1).returncode == 0
    assert [a["status"] for _, a in runs(out)] == ["ok"]
    before = out.read_bytes()
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert out.read_bytes() == before  # nothing lost
    r = quilt("run", exp, "--output", out, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("complete in the file, skipped") == 1
    ids = [i for i, _ in runs(out)]
    assert len(ids) == 3 and len(set(ids)) == 3
    # A different experiment in the same file is refused, and the file is untouched.
    other = experiment(tmp_path, BASE.replace("rate: 8", "rate: 4"), name="other.yaml")
    before = out.read_bytes()
    r = quilt("run", other, "--output", out, "--resume")
    assert r.returncode == 2 and "different" not in r.stdout and "refused" in r.stderr
    assert out.read_bytes() == before
    assert quilt("run", other, "--output", out, "--overwrite").returncode == 0
    assert len(runs(out)) == 3


def test_nan_weights_fail_the_run_on_the_right_rank_and_the_sweep_goes_on(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    sd = {"fc1.weight": torch.randn(512, 32), "fc1.bias": torch.zeros(512),
          "fc2.weight": torch.randn(512, 512), "fc2.bias": torch.zeros(512),
          "fc3.weight": torch.randn(5, 512), "fc3.bias": torch.zeros(5)}
    sd["fc2.weight"][3, 7] = float("nan")  # hidden2 runs on rank 1
    weights = tmp_path / "nan.pt"
    torch.save(sd, weights)
    text = BASE.replace("autoencoder: {rate: 8}", "autoencoder: {rate: 1}")
    text = text.replace("model.seed: [1, 2, 3]", "measurement.batch: [2, 4]")
    exp = experiment(tmp_path, text, weights=weights)
    out = tmp_path / "o.h5"
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 1, r.stdout + r.stderr  # runs failed; not a crash, not bad input
    got = runs(out)
    assert len(got) == 2  # keep-going: the second run was attempted and recorded
    for _, a in got:
        assert a["status"] == "failed"
        assert a["failed_rank"] == 1
        assert "rank 1: non-finite" in a["failure"]
    r = quilt("run", exp, "--output", out, "--overwrite", "--fail-fast")
    assert r.returncode == 1
    assert len(runs(out)) == 1  # stopped after the first failure


def test_setup_failure_is_recorded_not_crashed(tmp_path):
    torch = pytest.importorskip("torch")
    weights = tmp_path / "wrong.pt"
    torch.save({"fc1.weight": torch.zeros(3, 3)}, weights)
    exp = experiment(tmp_path, BASE.replace("model.seed: [1, 2, 3]", "model.seed: [1]"),
                     weights=weights)
    out = tmp_path / "o.h5"
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 1, r.stdout + r.stderr
    ((_, a),) = runs(out)
    assert a["status"] == "failed" and a["failed_rank"] == 0
    assert "rank 0:" in a["failure"] and "missing key \"fc1.bias\"" in a["failure"]


def test_validity_references_report_and_compare(tmp_path):
    text = BASE + """references:
  - {metric: throughput_sps, value: 1.0, tolerance: 0.0, better: higher}
  - {metric: latency_p50_s, value: 1.0e-9, tolerance: 0.0, better: lower, when: {model.seed: 2}}
"""
    text = text.replace("repetitions: 3}", "repetitions: 2, min_duration_s: 1000}")
    exp = experiment(tmp_path, text)
    out = tmp_path / "o.h5"
    r = quilt("run", exp, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "INVALID" in r.stdout
    for _, a in runs(out):
        assert a["validity"] == "invalid"
    rep = local("report", out)
    assert rep.returncode == 1  # invalid runs and a failed reference
    assert rep.stdout.count("PASS throughput_sps") == 3
    assert rep.stdout.count("FAIL latency_p50_s") == 1
    assert "shorter than min_duration_s" in rep.stdout
    cmp = local("report", out, "--compare", out)
    assert cmp.returncode == 0
    assert cmp.stdout.count("1.000") >= 6


def test_measured_runs_beside_a_cpu_hog_are_invalid(tmp_path):
    """Issue 10: a `measured` run that shares its CPU with another job is flagged INVALID (the
    run-queue delay of its ranks), recorded in the file and shown by `quilt report`. Made
    deterministic by pinning the ranks and two busy loops to one CPU: each process then gets
    about a quarter of it."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    hogs = [subprocess.Popen(["taskset", "-c", str(cpu), "/usr/bin/python3", "-c",
                              "while True: pass"]) for _ in range(2)]
    try:
        text = BASE.replace("repetitions: 3}", "repetitions: 2, max_cv: 0}").replace(
            "model.seed: [1, 2, 3]", "model.seed: [1]")
        out = tmp_path / "o.h5"
        cmd = ["taskset", "-c", str(cpu), MPIEXEC, "--bind-to", "none", "-n", "3", QUILT, "run",
               str(experiment(tmp_path, text)), "--output", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=ENV)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "INVALID" in r.stdout and "waited for a CPU" in r.stdout, r.stdout
    ((_, a),) = runs(out)
    assert a["validity"] == "invalid" and a["status"] == "ok"
    assert 0.1 < a["cpu_wait_fraction"] <= 10, a["cpu_wait_fraction"]
    with h5py.File(out, "r") as f:
        (rid,) = list(f["runs"])
        reasons = [x.decode() if isinstance(x, bytes) else x
                   for x in f["runs"][rid]["invalid_reasons"][()]]
    assert any("measurement.max_cpu_wait 10%" in x for x in reasons), reasons
    rep = local("report", out)
    assert rep.returncode == 1, rep.stdout + rep.stderr
    assert "host load: the busiest rank waited for a CPU" in rep.stdout, rep.stdout
    assert "INVALID" in rep.stdout and "waited for a CPU" in rep.stdout, rep.stdout
    # The rule can be turned off, and it is recorded as a parameter only when given.
    quiet = experiment(tmp_path, text.replace("max_cv: 0}", "max_cv: 0, max_cpu_wait: 0}"),
                       name="quiet.yaml")
    out2 = tmp_path / "quiet.h5"
    r = quilt("run", quiet, "--output", out2)
    assert r.returncode == 0, r.stdout + r.stderr
    ((_, b),) = runs(out2)
    assert b["cpu_wait_fraction"] >= 0 and "waited for a CPU" not in r.stdout, r.stdout


def test_scales_and_plan(tmp_path):
    text = BASE + "scales:\n  small: {measurement.batches: 2}\n  big: {measurement.batches: 9}\n" \
                  "default_scale: small\n"
    exp = experiment(tmp_path, text)
    p = local("plan", exp)
    assert p.returncode == 0 and "scale small" in p.stdout and "(2 + 1 warm-up)" in p.stdout
    p = local("plan", exp, "--scale", "big")
    assert "(9 + 1 warm-up)" in p.stdout
    p = local("plan", exp, "--scale", "huge")
    assert p.returncode == 2 and "its scales: small, big" in p.stderr
    r = quilt("run", exp, "--output", tmp_path / "o.h5", "--run-index", 7)
    assert r.returncode == 2 and "runs 0..2" in r.stderr


def test_auto_cuts_are_searched_and_predictions_stored(tmp_path):
    text = """quilt: 1
name: auto
model: {arch: resnet18, input: [3, 32, 32], classes: 10}
boards: {count: 2, profile: cpu}
partition: {cuts: auto, objective: minmax}
autoencoder: {rate: 8}
measurement: {batch: 2, warmup_batches: 1, batches: 3}
"""
    exp = experiment(tmp_path, text)
    plan = local("plan", exp)
    assert plan.returncode == 0, plan.stderr
    assert "cuts chosen by the search (minmax" in plan.stdout
    assert plan.stdout.count("predicted") == 2
    out = tmp_path / "o.h5"
    r = quilt("run", exp, "--output", out, ranks=2)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        (rid,) = list(f["runs"])
        g = f["runs"][rid]
        chosen = g["params"].attrs["partition.chosen_cuts"]
        assert chosen.startswith("[after_") and len(g["cut_names"]) == 1
        for k in ("0", "1"):
            st = g["stages"][k].attrs
            assert st["predicted_exec_s"] > 0
            assert abs(st["predicted_exec_s"] - st["predicted_compute_s"]
                       - st["predicted_comm_s"]) < 1e-12
    rep = local("report", out)
    assert "predicted" in rep.stdout and "error" in rep.stdout
    # A fixed cut that does not exist, and more boards than cut points: exit 2 with the key.
    bad = experiment(tmp_path, text.replace("objective: minmax}", "objective: minmax, fixed: [after_layer9]}"),
                     name="bad.yaml")
    v = local("validate", bad)
    assert v.returncode == 2 and "partition.fixed" in v.stderr and "after_layer9" in v.stderr
    many = experiment(tmp_path, text.replace("count: 2", "count: 12"), name="many.yaml")
    v = local("validate", many)
    assert v.returncode == 2 and "boards.count" in v.stderr
