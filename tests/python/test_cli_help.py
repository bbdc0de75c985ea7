"""The quilt command line itself: per-command --help, `quilt help CMD`, "did you mean" for
mistyped options and commands (exit 2), training runs planned and logged as training, plain
progress lines in redirected logs, console numbers that exist, and stored parameters that are
the values the run used. One tiny MLP training run (seconds); the rest runs no model.

Needs QUILT_BUILD_DIR (the CMake build directory); CTest sets it."""
import os
import re
import subprocess
from pathlib import Path

import h5py
import pytest

from conftest import BUILD, ENV, MPIEXEC, requires_build, SOURCE  # noqa: E402

pytestmark = requires_build

COMMANDS = ["run", "validate", "plan", "report", "models", "summary", "profile", "calibrate",
            "boards", "version", "collect", "trace", "reproduce"]


def quilt(*args, timeout=120):
    return subprocess.run([str(Path(BUILD) / "bin" / "quilt"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def test_top_level_help_lists_every_command():
    r = quilt("--help")
    assert r.returncode == 0, r.stderr
    for c in COMMANDS:
        assert re.search(rf"(?m)^  {c} ", r.stdout), (c, r.stdout)
    assert quilt("help").stdout == r.stdout
    r = quilt()
    assert r.returncode == 2 and "usage: quilt" in r.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_options_and_an_example(command):
    r = quilt(command, "--help")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"usage: quilt {command}"), r.stdout
    assert "options:" in r.stdout and "--help" in r.stdout
    assert "example" in r.stdout, r.stdout
    assert r.stderr == ""
    h = quilt("help", command)
    assert h.returncode == 0 and h.stdout == r.stdout


def test_run_help_needs_no_mpirun_and_names_its_options():
    r = quilt("run", "--help")
    for opt in ("--output", "--resume", "--overwrite", "--fail-fast", "--run-index", "--scale"):
        assert opt in r.stdout, r.stdout
    r = subprocess.run([MPIEXEC, "-n", "2", str(Path(BUILD) / "bin" / "quilt"), "run", "--help"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("usage: quilt run") == 1, r.stdout  # rank 0 only


def test_mistyped_options_and_commands_get_a_suggestion_and_exit_2():
    r = quilt("summary", "resnet50", "--rat", "64")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "did you mean `--rate`?" in r.stderr, r.stderr
    r = quilt("report", "--compre", "x.h5")
    assert r.returncode == 2 and "did you mean `--compare`?" in r.stderr, r.stderr
    r = quilt("plna", "x.yaml")
    assert r.returncode == 2 and "did you mean `plan`?" in r.stderr, r.stderr
    r = quilt("help", "reprot")
    assert r.returncode == 2 and "did you mean `report`?" in r.stderr, r.stderr
    r = quilt("summary", "resnet50", "--classes", "many")
    assert r.returncode == 2 and "`--classes`" in r.stderr and "many" in r.stderr, r.stderr
    r = subprocess.run([MPIEXEC, "-n", "1", str(Path(BUILD) / "bin" / "quilt"), "run",
                        "x.yaml", "--resme"], capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2 and "did you mean `--resume`?" in r.stderr, r.stderr


def test_plan_states_the_training_plan():
    r = quilt("plan", SOURCE / "experiments" / "tradeoff.yaml")
    assert r.returncode == 0, r.stderr
    training = [l for l in r.stdout.splitlines() if l.startswith("run ") and "training" in l]
    assert training, r.stdout
    for line in training:
        assert "warm-up" not in line, line
        assert re.search(r"training \w+: (at most )?\d+ epoch\(s\)", line) and "batch" in line, line
        assert "data " in line, line


TRAIN = """quilt: 1
name: cli-train
model: {arch: mlp, input: [4]}
data: {kind: uci-iris, seed: 3}
boards: {count: 1}
partition: {cuts: [after_hidden1]}
training: {mode: scratch, epochs: 2, batch: 16, lr: 0.01, optimizer: adam}
"""


def test_training_run_log_report_and_stored_parameters(tmp_path):
    exp = tmp_path / "t.yaml"
    exp.write_text(TRAIN)  # model.classes left to the model
    out = tmp_path / "t.h5"
    # stdout is a pipe: Open MPI gives the rank a pseudo-terminal all the same.
    r = subprocess.run([MPIEXEC, "-n", "1", str(Path(BUILD) / "bin" / "quilt"), "run", exp,
                        "--output", out], capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    log = r.stdout
    assert "\r" not in log and "\x1b" not in log, repr(log[:2000])
    assert "training scratch: 2 epoch(s), batch 16" in log, log
    assert "B/sample@cut" not in log, log  # no pipeline header above training rows
    # Iris has 3 classes: top-5 would be 100% by construction, so no number is shown for it.
    assert "top5" not in log and not re.search(r"top-5\s+\d", log), log
    assert "top-1" in log and "top1 0." in log
    with h5py.File(out, "r") as f:
        (run_id,) = list(f["runs"])
        params = {k: (v.decode() if isinstance(v, bytes) else str(v))
                  for k, v in f["runs"][run_id]["params"].attrs.items()}
    # The values the model was built with, not the file's "use the default" markers.
    assert params["model.classes"] != "0" and int(params["model.classes"]) >= 3, params
    assert params["model.input"] == "[4]", params
    rep = quilt("report", out)
    assert "measurement.batch" not in rep.stdout and "training.batch=16" in rep.stdout, rep.stdout
    assert "top-5 -" in rep.stdout and not re.search(r"top-5\s+\d", rep.stdout), rep.stdout


def test_an_epoch_without_evaluation_prints_a_dash_not_zeros(tmp_path):
    exp = tmp_path / "p.yaml"
    exp.write_text(TRAIN.replace("training: {mode: scratch, epochs: 2,",
                                 "autoencoder: {rate: 8}\ntraining: {mode: freeze, epochs: 2, "
                                 "freeze_epochs: 1, pretrain_epochs: 2,"))
    r = subprocess.run([MPIEXEC, "-n", "1", str(Path(BUILD) / "bin" / "quilt"), "run", exp,
                        "--output", tmp_path / "p.h5"], capture_output=True, text=True,
                       timeout=300, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "after 2 pretraining epoch(s)" in r.stdout, r.stdout
    # The first pretraining epoch is not evaluated: no "test loss 0.0000 top1 0.0000".
    assert "| test \u2014" in r.stdout, r.stdout
    assert "0.0000 top1 0.0000" not in r.stdout, r.stdout
