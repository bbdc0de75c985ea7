"""Quilt under a real SLURM: experiments/slurm/run.sbatch, submit.sh and `quilt plan --slurm`.

Run through tests/slurm/slurm_cluster_test.sh, which starts a single-node cluster and sets
SLURM_CONF, QUILT_BUILD_DIR, QUILT_SOURCE_DIR and QUILT_SLURM_WORK.
"""
import json
import os
import re
import subprocess
import time
from pathlib import Path

import h5py
import pytest

BUILD = os.environ.get("QUILT_BUILD_DIR")
SOURCE = Path(os.environ.get("QUILT_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SLURM = SOURCE / "experiments" / "slurm"
DATA = SOURCE / "tests" / "harness" / "data"

pytestmark = pytest.mark.skipif(
    not BUILD or not os.environ.get("SLURM_CONF"),
    reason="needs a test cluster: run tests/slurm/slurm_cluster_test.sh (CTest does)")

# Jobs inherit this environment (sbatch's default --export=ALL).
ENV = dict(os.environ, QUILT_BUILD_DIR=str(BUILD), OMP_NUM_THREADS="1")
ENV.pop("QUILT_OUTPUT", None)
ENV.pop("QUILT_LAUNCHER", None)


def quilt():
    return str(Path(BUILD) / "bin" / "quilt")


def quilt_help():
    """The top-level help and that of `run` and `plan` (where --resume, --run-index, --slurm are)."""
    return "".join(subprocess.run([quilt(), *args, "--help"], capture_output=True, text=True).stdout
                   for args in ([], ["run"], ["plan"]))


def logs(directory):
    """Every job log in `directory`, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(Path(directory).glob("*.out")))


def sbatch_wait(args, cwd, env=ENV, timeout=240):
    """sbatch --wait: blocks until the job (every task of an array) ends; returns its exit code."""
    r = subprocess.run(["sbatch", "--wait", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    m = re.search(r"Submitted batch job (\d+)", r.stdout)
    return r, (m.group(1) if m else None)


def check_results(path, runs, boards):
    """The file holds `runs` (None: any number of) complete, successful runs of `boards` stages
    each. Returns run id -> start time."""
    with h5py.File(path, "r") as f:
        assert f.attrs["quilt_format"] == "quilt-results"
        assert len(f["run_order"]) == len(f["runs"])
        if runs is not None:
            assert len(f["runs"]) == runs
        for run_id in f["runs"]:
            g = f["runs"][run_id]
            assert g.attrs["status"] == "ok", g.attrs["failure"]
            assert g.attrs["complete"] == 1
            assert len(g["stages"]) == boards
            assert g.attrs["throughput_sps"] > 0
        assert len(f["provenance"]["hosts"]) == boards
        return {k: float(f["runs"][k].attrs["start_unix_s"]) for k in f["runs"]}


def test_run_sbatch_with_srun_pmix(tmp_path):
    """Two boards, two runs, launched by srun --mpi=pmix (the default)."""
    out = tmp_path / "tiny.h5"
    r, job = sbatch_wait(["--ntasks=2", SLURM / "run.sbatch", DATA / "tiny.yaml", out], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr + logs(tmp_path)
    log = (tmp_path / f"quilt-{job}.out").read_text()
    assert "srun ->" in log, log
    # Each rank saw the whole step as its world: quilt checks ranks == boards.count.
    assert "on 2 rank(s)" in log, log
    check_results(out, runs=2, boards=2)


def test_submit_sh_with_mpirun_and_default_output(tmp_path):
    """Three boards: submit.sh reads boards.count; mpirun inside the allocation; the output
    defaults to results/<name>-<job id>.h5 under the submit directory."""
    env = dict(ENV, QUILT_LAUNCHER="mpirun")
    r = subprocess.run([str(SLURM / "submit.sh"), str(DATA / "mlp3.yaml"), "--wait"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr + logs(tmp_path)
    job = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    check_results(tmp_path / "results" / f"mlp3-{job}.h5", runs=1, boards=3)


def test_wrong_rank_count_fails_the_job(tmp_path):
    """quilt refuses a rank count other than boards.count; the job fails instead of hanging."""
    r, job = sbatch_wait(["--ntasks=2", SLURM / "run.sbatch", DATA / "mlp3.yaml",
                          tmp_path / "x.h5"], tmp_path)
    assert r.returncode != 0, logs(tmp_path)
    assert "boards" in (tmp_path / f"quilt-{job}.out").read_text()
    assert not (tmp_path / "x.h5").exists()


def test_requeue_keeps_the_output_and_appends_the_log(tmp_path):
    """A job requeued after its first run was written comes back with the same job id, appends to
    the same log, and leaves every run complete in the same file (resumed when quilt knows
    --resume, rerun otherwise)."""
    out = tmp_path / "tiny.h5"
    r = subprocess.run(["sbatch", "--ntasks=2", str(SLURM / "run.sbatch"), str(DATA / "tiny.yaml"),
                        str(out)], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    deadline = time.time() + 180
    while not out.exists() and time.time() < deadline:  # the first run is written
        time.sleep(0.1)
    assert out.exists(), logs(tmp_path)
    # Usually one run is in the file; on a fast machine the job may already have both, or have
    # ended (a finished job can be requeued too).
    first = check_results(out, runs=None, boards=2)
    q = subprocess.run(["scontrol", "requeue", job], env=ENV, capture_output=True, text=True)
    assert q.returncode == 0, q.stderr
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=ENV,
                               capture_output=True, text=True).stdout.strip()
        log = (tmp_path / f"quilt-{job}.out").read_text()
        if not state and "(restart 1)" in log:
            break
        time.sleep(0.5)
    log = (tmp_path / f"quilt-{job}.out").read_text()
    assert "(restart 0)" in log and "(restart 1)" in log, log
    info = subprocess.run(["scontrol", "-o", "show", "job", job], env=ENV, capture_output=True,
                          text=True).stdout
    assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, info + log
    starts = check_results(out, runs=2, boards=2)
    if "--resume" in quilt_help():
        for run_id, start in first.items():
            assert starts[run_id] == start, f"run {run_id} was complete but ran again"


def test_job_array(tmp_path):
    """A job array from `quilt plan --slurm` (or, until that exists, slurm_job_array() through
    the test tool): one task per run of tiny.yaml, each task writes and completes its own file."""
    help_text = quilt_help()
    if "--run-index" not in help_text:
        pytest.skip("this quilt has no `run --run-index`; job arrays cannot run")
    data = DATA / "tiny.yaml"
    script = tmp_path / "tiny-array.sbatch"
    tool = os.environ.get("QUILT_SLURM_ARRAY_TOOL")
    if "--slurm" in help_text:
        r = subprocess.run([quilt(), "plan", str(data), "--slurm", str(script)], cwd=tmp_path,
                           env=ENV, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        # The script names build/release relative to the repository; point it at this build.
        text = re.sub(r"(?m)^quilt=.*$", f"quilt='{quilt()}'", script.read_text())
        text = re.sub(r"(?m)^output_dir=.*$", "output_dir=out", text)
        script.write_text(text)
    elif tool and Path(tool).exists():
        print("quilt has no `plan --slurm` yet: job array generated by", tool)
        r = subprocess.run([tool, str(data), BUILD, "out"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        script.write_text(r.stdout)
    else:
        pytest.skip("no `quilt plan --slurm` and no QUILT_SLURM_ARRAY_TOOL: job array not tested")
    r, job = sbatch_wait([script], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr + logs(tmp_path)
    for task in (0, 1):
        assert (tmp_path / f"tiny-{job}_{task}.out").exists(), logs(tmp_path)
        check_results(tmp_path / "out" / f"tiny.{task}.h5", runs=1, boards=2)


def test_reproduce_inside_an_allocation_launches_with_srun(tmp_path):
    """`quilt reproduce` in a batch job: SLURM_JOB_ID is set, so each experiment runs under srun
    (here the four-board one), and the report is written."""
    out = tmp_path / "paper"
    cmd = f"{quilt()} reproduce --scale smoke --only interposition_multi --out {out}"
    r, job = sbatch_wait(["--ntasks=4", "--wrap", cmd], tmp_path, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr + logs(tmp_path)
    m = json.loads((out / "reproduce.json").read_text())
    assert m["launcher"] == "srun"
    e = [x for x in m["experiments"] if x["name"] == "interposition_multi"][0]
    assert e["status"] == "ok", e
    assert e["command"].startswith("srun --mpi=pmix -n 4 "), e["command"]
    check_results(out / "interposition_multi.h5", runs=2, boards=4)
    assert (out / "index.html").exists() and (out / "report.md").exists()


def test_reproduce_jobs_2_runs_two_srun_steps_at_once(tmp_path):
    """`quilt reproduce --jobs 2` in a 2-task allocation: two 1-rank experiments, each its own
    `srun` step (with --overcommit), running at the same time."""
    out = tmp_path / "paper"
    cmd = f"{quilt()} reproduce --scale smoke --only feasibility,accuracy --jobs 2 --out {out}"
    r, job = sbatch_wait(["--ntasks=2", "--wrap", cmd], tmp_path, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr + logs(tmp_path)
    m = json.loads((out / "reproduce.json").read_text())
    assert m["launcher"] == "srun" and m["jobs"] == 2
    e = {x["name"]: x for x in m["experiments"]}
    for name in ("feasibility", "accuracy"):
        assert e[name]["status"] == "ok", e[name]
        assert e[name]["command"].startswith("srun --mpi=pmix -n 1 --overcommit "), e[name]
    a, b = e["feasibility"], e["accuracy"]
    assert a["start_s"] <= b["start_s"] < min(a["end_s"], b["end_s"]), (a, b)
