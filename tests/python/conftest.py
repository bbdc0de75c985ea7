"""What the pytest files of tests/python share: where the build and the sources are, the MPI
environment for `quilt` under mpiexec, the skip when not run through CTest, and the `quilt`
Python package (<build>/python) as a fixture.

CTest sets QUILT_BUILD_DIR (and QUILT_SOURCE_DIR, MPIEXEC). Test files import the constants
(`from conftest import BUILD, ENV, MPIEXEC`) and the helpers that run `quilt`; pytest puts this
folder on sys.path."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BUILD = os.environ.get("QUILT_BUILD_DIR")
SOURCE = Path(os.environ.get("QUILT_SOURCE_DIR", Path(__file__).resolve().parents[2]))
MPIEXEC = os.environ.get("MPIEXEC", "mpiexec")
# Open MPI as root, more ranks than cores, one thread per rank (the cores are few and shared).
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")

# The build's `quilt` binary.
QUILT = str(Path(BUILD or ".") / "bin" / "quilt")

# `pytestmark = requires_build` in a file whose every test needs the build.
requires_build = pytest.mark.skipif(not BUILD, reason="QUILT_BUILD_DIR is not set (run through CTest)")

if BUILD:
    sys.path.insert(0, str(Path(BUILD) / "python"))


@pytest.fixture(scope="module")
def quilt():
    """The `quilt` Python package of the build; skips the test when there is no build."""
    if not BUILD:
        pytest.skip("QUILT_BUILD_DIR is not set (run through CTest)")
    import quilt as q
    return q


def mpi_quilt(*args, ranks, timeout):
    """`mpiexec -n <ranks> quilt <args>` under ENV: the CompletedProcess, output as text. A test
    file binds its own defaults: `quilt = functools.partial(mpi_quilt, ranks=2, timeout=300)`."""
    cmd = [MPIEXEC, "-n", str(ranks), QUILT, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def local_quilt(*args, timeout=120):
    """`quilt <args>` in this process's place (no mpiexec) under ENV, output as text."""
    return subprocess.run([QUILT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def run_ok(directory, text, name, ranks, timeout):
    """Writes the experiment `text` to <directory>/<name>.yaml and runs it with `quilt run` under
    mpiexec into <directory>/<name>.h5, which must succeed; returns that path."""
    exp = directory / f"{name}.yaml"
    exp.write_text(text)
    out = directory / f"{name}.h5"
    r = mpi_quilt("run", exp, "--output", out, ranks=ranks, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return out
