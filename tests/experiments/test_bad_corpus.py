"""Malformed experiment files are refused cleanly.

Every file in bad/ must make `quilt validate FILE` exit with exactly 2 (bad input), print each
`# expect: TEXT` of its header on stderr (`{file}` stands for the path given to quilt), and not
crash. Every file in ranks/ is valid but is started with the wrong number of MPI ranks (or
options, `# args:`) and must make `mpiexec -n N quilt run FILE --output TMP` exit with 2 without
creating the result file. The valid experiments in experiments/, and the files in good/ (legal
YAML corners: end markers, directives, anchors, CRLF, BOM, flow style, block scalars), must pass
`quilt validate`.

Run with /usr/bin/python3 -m pytest (CTest sets QUILT_BUILD_DIR and QUILT_SOURCE_DIR).
"""

import concurrent.futures
import os
import pathlib
import resource
import shlex
import shutil
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = pathlib.Path(os.environ.get("QUILT_SOURCE_DIR", HERE.parents[1]))
BUILD = os.environ.get("QUILT_BUILD_DIR")
if not BUILD:
    pytest.skip("QUILT_BUILD_DIR is not set (run through ctest)", allow_module_level=True)
QUILT = pathlib.Path(BUILD) / "bin" / "quilt"

BAD = sorted((HERE / "bad").glob("*.yaml"))
RANKS = sorted((HERE / "ranks").glob("*.yaml"))
# experiments/examples/ need the .pt their make_*.py scripts write (tests/python/test_torchscript_runs.py)
VALID = sorted(p for p in (SOURCE / "experiments").rglob("*.yaml") if "examples" not in p.parts)
GOOD = sorted((HERE / "good").glob("*.yaml"))  # legal YAML corners that must keep validating

VALIDATE_TIMEOUT_S = 20
RUN_TIMEOUT_S = 60
# Text that means the program failed in a way the user should never see.
CRASH_MARKERS = ("internal error", "terminate called", "Segmentation fault", "Aborted",
                 "AddressSanitizer", "runtime error:", "core dumped", "what():")


def header(path):
    """The `# key: value` lines at the top of a corpus file, as {key: [values]}."""
    out = {}
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].strip().partition(":")
            if sep and key in ("expect", "ranks", "args", "bug"):
                out.setdefault(key, []).append(value.strip())
    return out


def _sanitized():
    # A sanitizer build reserves terabytes of address space: no address-space limit then.
    try:
        return b"__asan_init" in QUILT.read_bytes() or b"__ubsan_handle" in QUILT.read_bytes()
    except OSError:
        return False


LIMIT_AS = None if _sanitized() else 3 << 30


def _limits():
    # A file that makes quilt allocate without bound fails fast instead of taking the machine.
    if LIMIT_AS:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(args, timeout, **kw):
    try:
        p = subprocess.run(args, capture_output=True, timeout=timeout, preexec_fn=_limits, **kw)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode("utf-8", "replace"), \
            (e.stderr or b"").decode("utf-8", "replace")
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def validate(paths, extra=()):
    return run([str(QUILT), "validate"] + [str(p) for p in paths] + list(extra),
               VALIDATE_TIMEOUT_S + len(paths))


def split_by_file(paths, out, err):
    """Each file's lines of a `quilt validate FILE...` run (its messages start with its path)."""
    lines = {p: [] for p in paths}
    starts = sorted(((str(p), p) for p in paths), key=lambda t: -len(t[0]))
    current = None
    for line in (out + err).splitlines():
        if line.startswith("quilt: "):  # the program's own last words, not a file's message
            current = None
            continue
        for prefix, p in starts:
            if line.startswith(prefix + ":"):
                current = p
                break
        if current is not None:
            lines[current].append(line)
    return lines


def validate_each(paths):
    """{path: (exit code, stdout, stderr)} as if `quilt validate` had run once per file.

    LibTorch makes every start cost a second or more, so the files go to one process in turn;
    `validate` reports each file and goes on. Where the process stops early (a crash, an internal
    error, anything but a ConfigError), the first file without a report is run on its own, and
    the rest again together. QUILT_CORPUS_ONE_BY_ONE=1 runs every file on its own."""
    results, todo = {}, []
    for p in paths:
        h = header(p)
        # Files with their own arguments, and known bugs (which may crash), run on their own.
        if os.environ.get("QUILT_CORPUS_ONE_BY_ONE") == "1" or h.get("args") or h.get("bug"):
            extra = shlex.split(" ".join(h.get("args", [])))
            results[p] = validate([p], extra)
        else:
            todo.append(p)
    while todo:
        rc, out, err = validate(todo)
        lines = split_by_file(todo, out, err)
        done = [p for p in todo if lines[p]]
        clean = rc is not None and rc in (0, 2) and not any(m in err for m in CRASH_MARKERS)
        if clean and len(done) == len(todo):
            for p in todo:
                text = "\n".join(lines[p]) + "\n"
                ok = text.startswith(f"{p}: ok")
                results[p] = (0, text, "") if ok else (2, "", text)
            break
        # Keep the files reported before the process stopped; run the next one alone.
        first = next(i for i, p in enumerate(todo) if not lines[p])
        for p in todo[:first]:
            text = "\n".join(lines[p]) + "\n"
            results[p] = (0, text, "") if text.startswith(f"{p}: ok") else (2, "", text)
        results[todo[first]] = validate([todo[first]])
        todo = todo[first + 1:]
    return results


def check_refused(path, rc, out, err, command):
    show = f"{command}\nexit code: {rc}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}"
    assert rc is not None, f"hung (killed after the timeout)\n{show}"
    assert rc >= 0, f"killed by signal {-rc}\n{show}"
    for marker in CRASH_MARKERS:
        assert marker not in err, f"crash marker {marker!r} in stderr\n{show}"
    assert rc == 2, f"exit code {rc}, expected 2 (bad input)\n{show}"
    expects = header(path).get("expect", [])
    assert expects, f"{path.name} has no `# expect:` line"
    for e in expects:
        want = e.replace("{file}", str(path))
        # Text without {file} must not match the file's own name (`tab` in syntax-tab-*.yaml).
        haystack = err if "{file}" in e else err.replace(str(path), "{file}")
        assert want in haystack, f"expected {want!r} in stderr\n{show}"


@pytest.fixture(scope="session")
def quilt_binary():
    if not QUILT.exists():
        pytest.fail(f"{QUILT} does not exist; build the `quilt` target first")
    return QUILT


def _in_parallel(fn, paths, workers=2):
    chunks = [paths[i::workers] for i in range(workers)]
    results = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for r in pool.map(fn, chunks):
            results.update(r)
    return results


@pytest.fixture(scope="session")
def validated(quilt_binary):
    """`quilt validate` of every bad file."""
    return _in_parallel(validate_each, BAD)


@pytest.fixture(scope="session")
def validated_good(quilt_binary):
    return _in_parallel(validate_each, VALID + GOOD)


def test_corpus_is_there():
    assert len(BAD) >= 60, f"only {len(BAD)} files in {HERE / 'bad'}"
    assert RANKS, f"no files in {HERE / 'ranks'}"
    for path in BAD + RANKS:
        h = header(path)
        assert h.get("expect"), f"{path.name}: no `# expect:` line in its header"
    for path in RANKS:
        assert len(header(path).get("ranks", [])) == 1, f"{path.name}: needs one `# ranks: N`"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_is_refused(path, validated):
    rc, out, err = validated[path]
    check_refused(path, rc, out, err, f"quilt validate {path}")


@pytest.mark.parametrize("path", VALID + GOOD,
                         ids=[str(p.relative_to(SOURCE)) for p in VALID + GOOD])
def test_valid_file_validates(path, validated_good):
    rc, out, err = validated_good[path]
    assert rc == 0, f"quilt validate {path}: exit code {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert f"{path}: ok" in out


def test_empty_file_is_refused(tmp_path, quilt_binary):
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    rc, out, err = run([str(QUILT), "validate", str(path)], VALIDATE_TIMEOUT_S)
    (tmp_path / "h").write_text(f"# expect: {path}: must be a YAML mapping\n")
    check_refused(tmp_path / "h", rc, out, err, f"quilt validate {path}")


def test_missing_file_is_refused(tmp_path, quilt_binary):
    path = tmp_path / "nope.yaml"
    rc, out, err = run([str(QUILT), "validate", str(path)], VALIDATE_TIMEOUT_S)
    (tmp_path / "h").write_text(f"# expect: {path}: cannot open the experiment file\n")
    check_refused(tmp_path / "h", rc, out, err, f"quilt validate {path}")


def test_directory_is_refused(tmp_path, quilt_binary):
    # Today: `DIR: must be a YAML mapping of sections` (a directory reads as an empty file).
    path = tmp_path / "experiment.yaml"
    path.mkdir()
    rc, out, err = run([str(QUILT), "validate", str(path)], VALIDATE_TIMEOUT_S)
    (tmp_path / "h").write_text(f"# expect: {path}: \n# expect: is a directory\n")
    check_refused(tmp_path / "h", rc, out, err, f"quilt validate {path}")


def test_one_bad_file_among_good_ones(quilt_binary):
    good, bad = VALID[0], HERE / "bad" / "type-string-for-integer.yaml"
    rc, out, err = run([str(QUILT), "validate", str(good), str(bad), str(good)],
                       3 * VALIDATE_TIMEOUT_S)
    assert rc == 2, f"exit code {rc}\n{out}\n{err}"
    assert out.count(f"{good}: ok") == 2, out
    assert str(bad) in err


def run_with_ranks(path, workdir):
    mpiexec = os.environ.get("MPIEXEC") or shutil.which("mpiexec") or shutil.which("mpirun")
    h = header(path)
    output = workdir / "result.h5"
    command = [mpiexec, "-n", h["ranks"][0], str(QUILT), "run", str(path), "--output", str(output)]
    command += shlex.split(" ".join(h.get("args", [])))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    rc, out, err = run(command, RUN_TIMEOUT_S, env=env, cwd=workdir)
    return command, rc, out, err, sorted(str(f.relative_to(workdir)) for f in workdir.rglob("*"))


@pytest.fixture(scope="session")
def ran(quilt_binary, tmp_path_factory):
    """`mpiexec -n N quilt run FILE` of every ranks/ file, two at a time."""
    if not (os.environ.get("MPIEXEC") or shutil.which("mpiexec") or shutil.which("mpirun")):
        pytest.skip("no mpiexec")
    dirs = {p: tmp_path_factory.mktemp(p.stem) for p in RANKS}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(zip(RANKS, pool.map(lambda p: run_with_ranks(p, dirs[p]), RANKS)))


@pytest.mark.parametrize("path", RANKS, ids=[p.stem for p in RANKS])
def test_run_with_wrong_ranks_is_refused(path, ran):
    command, rc, out, err, files = ran[path]
    check_refused(path, rc, out, err, " ".join(command))
    assert not files, f"the refused run left files behind: {files}"
