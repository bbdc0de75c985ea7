"""`quilt reproduce --scale smoke` end to end: every paper experiment under mpirun, the analysis
scripts, the report, checked in headless Chromium without network access.

The first invocation meets a damaged result file (feasibility.h5 is not HDF5): that experiment
fails, the others go on, and the report shows the failure with its exit code and log. The
second invocation, after the damaged file is removed, resumes: the complete experiments are not
re-run, feasibility runs, everything succeeds, and the final report is loaded in Chromium (every
image loads, every table is there) and screenshotted beside it (report.png).

Asserts on the report's structure, not on the analysis scripts' exact text (those are rewritten
independently). Needs QUILT_BUILD_DIR (CTest sets it) and Debian's chromium.
"""
import ctypes
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

BUILD = os.environ.get("QUILT_BUILD_DIR", "build/release")
QUILT = os.path.join(BUILD, "bin", "quilt")
OUT = os.path.join(BUILD, "test-reproduce-smoke")
EXPERIMENTS = ["efficiency", "breakdown", "interposition", "interposition_multi", "partition_auto",
               "feasibility", "accuracy", "weight_freezing", "tradeoff", "interposition_accuracy",
               "precision", "precision_accuracy"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def die_with_parent():
    """In the child before exec: SIGTERM when this test process dies (a CTest timeout's SIGKILL
    included), so no reproduce, mpirun or Chromium outlives the test."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_group(cmd, timeout, **kw):
    """subprocess.run in its own session; the whole group is killed on timeout."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=die_with_parent, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def reproduce(*args, timeout=900):
    return run_group([QUILT, "reproduce", "--scale", "smoke", "--out", OUT, *args], timeout)


def manifest():
    with open(os.path.join(OUT, "reproduce.json")) as f:
        return json.load(f)


class Page(html.parser.HTMLParser):
    """Sections, tables, images and links of the report, and every resource it refers to."""

    def __init__(self):
        super().__init__()
        self.sections, self.tables, self.images, self.refs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "experiment" in a.get("class", ""):
            self.sections.append(a.get("id"))
        if tag == "table":
            self.tables.append(a.get("id") or a.get("class"))
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            if key in a and not a[key].startswith("#"):
                self.refs.append(a[key])


def parse_report():
    page = Page()
    with open(os.path.join(OUT, "index.html")) as f:
        text = f.read()
    page.feed(text)
    return page, text


def check_structure(page, text):
    assert page.sections == [f"exp-{n}" for n in EXPERIMENTS]
    for table in ("verdict-table", "paper-table", "experiments-table", "provenance-table"):
        assert table in page.tables
    # Self-contained: every reference is a relative path to a file in OUT, nothing remote.
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", text, re.I)
    assert "@import" not in text and "url(" not in text
    for ref in page.refs:
        assert os.path.isfile(os.path.join(OUT, ref)), ref


SOURCE = os.environ.get("QUILT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
REPORT = os.path.join(SOURCE, "analysis", "report.py")


def test_report_collects_verdict_lines_robustly():
    sys.path.insert(0, os.path.dirname(REPORT))
    try:
        import report
    finally:
        sys.path.pop(0)
    text = ("Effect 'a': SHOWS (+1.2 pt)\n  Effect 'b': DOES NOT SHOW here\n"
            "Effect 'c' INCONCLUSIVE: CI -0.3..0.5\nit shows nothing\nSHOWSTOPPER\n"
            "Effect 'a': SHOWS (+1.2 pt)\n")
    assert report.verdict_lines(text) == [
        ("SHOWS", "Effect 'a': SHOWS (+1.2 pt)"), ("DOES NOT SHOW", "Effect 'b': DOES NOT SHOW here"),
        ("INCONCLUSIVE", "Effect 'c' INCONCLUSIVE: CI -0.3..0.5")]


def test_report_without_a_manifest_is_bad_input(tmp_path):
    r = subprocess.run(["/usr/bin/python3", REPORT, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "reproduce.json" in r.stderr


@pytest.fixture(scope="module")
def first_run():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    with open(os.path.join(OUT, "feasibility.h5"), "w") as f:
        f.write("not an HDF5 file\n")
    t0 = time.monotonic()
    r = reproduce()
    return r, time.monotonic() - t0


def test_failed_experiment_does_not_stop_the_rest(first_run):
    r, wall_s = first_run
    assert r.returncode == 1, r.stdout + r.stderr
    m = manifest()
    status = {e["name"]: e for e in m["experiments"]}
    assert [e["name"] for e in m["experiments"]] == EXPERIMENTS
    assert status["feasibility"]["status"] == "failed"
    assert status["feasibility"]["exit_code"] == 2
    for name in EXPERIMENTS:
        if name != "feasibility":
            assert status[name]["status"] == "ok", (name, status[name])
            assert status[name]["wall_s"] > 0
        assert status[name]["ranks"] == (4 if name in ("interposition_multi", "partition_auto")
                                         else 2 if name in ("efficiency", "breakdown", "interposition", "precision")
                                         else 1)
        assert os.path.getsize(os.path.join(OUT, "logs", name + ".log")) > 0
    # The report names the failure, its exit code and the end of its log.
    page, text = parse_report()
    check_structure(page, text)
    section = text[text.index('id="exp-feasibility"'):text.index('id="exp-accuracy"')]
    assert "failed" in section and "exit code 2" in section
    assert "feasibility.h5" in section  # the log tail: quilt run says why the file is refused
    print(f"first smoke invocation: {wall_s:.0f} s")


def test_progress_is_plain_lines_without_a_terminal(first_run):
    r, _ = first_run
    assert "\r" not in r.stdout and "\x1b" not in r.stdout
    for i, name in enumerate(EXPERIMENTS, start=1):
        assert re.search(rf"^\[{i}/{len(EXPERIMENTS)}\] {name}\b.*\bdone\b", r.stdout, re.M), r.stdout
    assert re.search(r"\bleft\b", r.stdout)


def test_resume_reruns_only_what_is_incomplete_and_report_loads_in_chromium(first_run):
    os.remove(os.path.join(OUT, "feasibility.h5"))
    r = reproduce(timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    m = manifest()
    for e in m["experiments"]:
        assert e["status"] == ("ok" if e["name"] == "feasibility" else "complete"), e
    for a in m["analysis"]:
        assert a["status"] == "ok", a
    assert "complete in its result file, skipped" in r.stdout

    page, text = parse_report()
    check_structure(page, text)
    assert len(page.images) >= 5  # the figure scripts' PNGs
    assert "data" in page.tables  # CSV tables rendered
    with open(os.path.join(OUT, "report.md")) as f:
        md = f.read()
    for name in EXPERIMENTS:
        assert f"## {name}:" in md
    assert "## Verdicts" in md and "## Provenance" in md
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert os.path.isfile(os.path.join(OUT, img))

    # Provenance and wall times are in the overview tables.
    overview = text[text.index('id="experiments-table"'):]
    for name in EXPERIMENTS:
        row = re.search(rf'<tr><td[^>]*><a href="#exp-{name}">.*?</tr>', overview).group(0)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        # Wall time over all invocations (from the logs): the first one ran it.
        assert re.fullmatch(r"(\d+m)?\d+s", cells[6]) and cells[6] != "0s", row
    prov = text[text.index('id="provenance-table"'):]
    assert os.uname().nodename in prov
    assert re.search(r"<td>[0-9a-f]{7,40}( \(dirty\))?</td>", prov)
    assert prov.count("<td>smoke</td>") >= len(EXPERIMENTS)  # the scale each file was run at
    assert "alveo-u200" in text[text.index('id="profiles"'):]  # the board profile's text

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make deps installs it)"
    profile = tempfile.mkdtemp(prefix="quilt-chromium-")
    try:
        # No network at all when a network namespace can be made (root); the flags otherwise.
        netless = ["unshare", "-n"] if subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []
        url = "file://" + os.path.abspath(os.path.join(OUT, "index.html"))
        base = netless + [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = run_group(base + ["--dump-dom", url + "?check"], timeout=120)
        assert dom.returncode == 0, dom.stderr[-3000:]
        found = re.search(r'<pre id="quilt-check">(.*?)</pre>', dom.stdout, re.S)
        assert found, dom.stdout[-2000:]
        check = json.loads(html.unescape(found.group(1)))
        assert check["images"] == len(page.images) > 0
        assert check["loaded"] == check["images"], check["broken"]
        ids = [t["id"] for t in check["tables"]]
        for table in ("verdict-table", "paper-table", "experiments-table", "provenance-table"):
            assert table in ids
        assert all(t["rows"] >= 2 for t in check["tables"]), check["tables"]
        assert check["sections"] == [f"exp-{n}" for n in EXPERIMENTS]
        shot = os.path.join(OUT, "report.png")
        s = run_group(base + [f"--screenshot={os.path.abspath(shot)}", "--window-size=1280,2000",
                              url], timeout=120)
        assert s.returncode == 0, s.stderr[-3000:]
        assert os.path.getsize(shot) > 10_000
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def sigterm_when(p, ready, never=None, timeout=120):
    """Waits up to `timeout` s for ready() (fails the test with `never` if given and it does not
    come), sends SIGTERM to `p` and returns its stdout; SIGKILLs its group if it is still there."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                if never:
                    pytest.fail(never)
                break
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out_text, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return out_text


def test_sigterm_stops_the_children_and_keeps_what_finished(tmp_path):
    out = str(tmp_path / "interrupted")
    p = subprocess.Popen([QUILT, "reproduce", "--scale", "smoke", "--out", out, "--only",
                          "weight_freezing"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, preexec_fn=die_with_parent)
    log = os.path.join(out, "logs", "weight_freezing.log")
    out_text = sigterm_when(p, lambda: os.path.exists(log) and "] run " in open(log).read())
    assert p.returncode == 128 + signal.SIGTERM, out_text
    with open(os.path.join(out, "reproduce.json")) as f:
        m = json.load(f)
    wf = [e for e in m["experiments"] if e["name"] == "weight_freezing"][0]
    assert wf["status"] == "interrupted"
    assert m["interrupted_by_signal"] == signal.SIGTERM
    assert os.path.exists(os.path.join(out, "index.html"))
    # No rank outlives it.
    ps = subprocess.run(["pgrep", "-f", "--", f"--output {out}/weight_freezing.h5"], capture_output=True,
                        text=True)
    assert ps.stdout.strip() == ""


def test_sigkill_leaves_no_job_behind(tmp_path):
    """No handler runs on SIGKILL: the experiment's mpirun still stops (parent-death signal)."""
    out = str(tmp_path / "killed")
    pattern = f"--output {out}/weight_freezing.h5"
    p = subprocess.Popen([QUILT, "reproduce", "--scale", "smoke", "--out", out, "--only",
                          "weight_freezing"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the experiment never started")
        p.kill()
        p.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("mpirun or a rank outlived a SIGKILLed quilt reproduce")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)


def test_jobs_must_be_a_positive_integer(tmp_path):
    for bad in ("0", "-1", "two"):
        r = subprocess.run([QUILT, "reproduce", "--out", str(tmp_path / "bad"), "--jobs", bad],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert "--jobs" in r.stderr and ">= 1" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "bad" / "reproduce.json")  # refused before any work


def test_jobs_2_runs_two_experiments_at_the_same_time(tmp_path):
    """--jobs 2: a 4-rank experiment runs alone, then two 1-rank ones run at once (their spans
    overlap), each with its own log, wall time and status; the report records the jobs count."""
    out = str(tmp_path / "jobs2")
    names = ["partition_auto", "feasibility", "accuracy"]
    r = run_group([QUILT, "reproduce", "--scale", "smoke", "--out", out, "--jobs", "2",
                   "--only", ",".join(names)], timeout=240)
    with open(os.path.join(out, "reproduce.json")) as f:
        m = json.load(f)
    assert m["jobs"] == 2
    exps = {e["name"]: e for e in m["experiments"]}
    for n in names:
        e = exps[n]
        assert e["status"] == "ok", (e, r.stdout, r.stderr)
        assert "--bind-to none" in e["command"]  # two mpiruns must not share core 0
        assert 0 <= e["start_s"] < e["end_s"] and e["wall_s"] > 0, e
        with open(os.path.join(out, e["log"])) as f:
            log = f.read()
        assert log.startswith("==== ") and re.search(r"^==== \S+ exit 0 after", log, re.M)
    wide, a, b = exps["partition_auto"], exps["feasibility"], exps["accuracy"]
    assert wide["ranks"] == 4 and wide["end_s"] <= a["start_s"]  # wider than N: alone, first
    # Both started before either ended: they ran at the same time, in file order.
    assert a["start_s"] <= b["start_s"] < min(a["end_s"], b["end_s"]), (a, b)
    for n in exps:
        if n not in names:
            assert exps[n]["status"] == "not-run" and exps[n]["start_s"] < 0
    for s in m["analysis"]:
        if s["experiment"] in names and s["name"] != "fig5_sensitivity":
            assert s["status"] == "ok", s
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\r" not in r.stdout and "\x1b" not in r.stdout
    for i, n in enumerate(names, start=1):
        assert re.search(rf"^\[{i}/3\] {n}: ok in .*\b[123] of 3 done", r.stdout, re.M), r.stdout
    # The report: every experiment's section, the jobs count, when each one ran.
    with open(os.path.join(out, "index.html")) as f:
        text = f.read()
    for n in EXPERIMENTS:
        assert f'id="exp-{n}"' in text
    assert "2 job(s) at a time" in text and "<code>--jobs 2</code>" in text
    assert "ran (since start)" in text and a["started_utc"] in text
    with open(os.path.join(out, "report.md")) as f:
        md = f.read()
    assert "2 job(s) at a time" in md and "`--jobs 2`" in md
    for n in EXPERIMENTS:
        assert f"## {n}:" in md


def test_jobs_2_sigterm_stops_every_running_experiment(tmp_path):
    out = str(tmp_path / "jobs2-term")
    names = ["weight_freezing", "tradeoff"]
    p = subprocess.Popen([QUILT, "reproduce", "--scale", "smoke", "--out", out, "--jobs", "2",
                          "--only", ",".join(names)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=die_with_parent)
    patterns = [f"--output {out}/{n}.h5" for n in names]
    out_text = sigterm_when(
        p, lambda: all(subprocess.run(["pgrep", "-f", "--", pat], capture_output=True).returncode
                       == 0 for pat in patterns),
        never="the two experiments were never running at the same time")
    assert p.returncode == 128 + signal.SIGTERM, out_text
    with open(os.path.join(out, "reproduce.json")) as f:
        m = json.load(f)
    for e in m["experiments"]:
        if e["name"] in names:
            assert e["status"] == "interrupted", e
    assert m["interrupted_by_signal"] == signal.SIGTERM
    assert os.path.exists(os.path.join(out, "index.html"))
    for pat in patterns:  # no mpirun nor rank of either outlives it
        ps = subprocess.run(["pgrep", "-f", "--", pat], capture_output=True, text=True)
        assert ps.stdout.strip() == "", pat
