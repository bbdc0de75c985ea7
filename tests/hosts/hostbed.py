"""Helpers shared by the multi-host tests: the test bed (tests/hosts/testbed.sh), quilt under
mpirun across its hosts, and result files read with h5py."""
import os
import subprocess
import time
from pathlib import Path

import h5py

HERE = Path(__file__).resolve().parent
TESTBED = HERE / "testbed.sh"
BUILD = Path(os.environ.get("QUILT_BUILD_DIR", "build/release"))
QUILT = BUILD / "bin" / "quilt"
SOURCE = Path(os.environ.get("QUILT_SOURCE_DIR", HERE.parent.parent))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", QUILT_BUILD_DIR=str(BUILD))
# Open MPI's out-of-band channel (mpirun <-> orted on each host) probes an idle connection after 5 s,
# every 2 s, 3 times: a host that vanishes from the network ends the job in about 11 s.
KEEPALIVE = ["--mca", "oob_tcp_keepalive_time", "5", "--mca", "oob_tcp_keepalive_intvl", "2",
             "--mca", "oob_tcp_keepalive_probes", "3"]


def tb(*args, check=True):
    r = subprocess.run([str(TESTBED), *map(str, args)], capture_output=True, text=True,
                       timeout=120, env=ENV)
    if check and r.returncode != 0:
        raise RuntimeError(f"testbed.sh {' '.join(map(str, args))}: {r.stdout}{r.stderr}")
    return r


def up(hosts):
    """Builds the test bed; a watchdog tears it down if this process dies without doing so."""
    tb("up", hosts, "--watch", os.getpid())


def down():
    tb("down", check=False)


def mpirun_cmd(ranks, *args, mpi_options=()):
    return [str(TESTBED), "mpirun", str(ranks), *KEEPALIVE, *mpi_options, str(QUILT),
            *map(str, args)]


def quilt_on_hosts(ranks, *args, timeout=300):
    """quilt ARGS with one rank on each of the first `ranks` hosts; a hard timeout so that a hang
    fails the test instead of hanging it."""
    return subprocess.run(["timeout", "-k", "5", str(timeout), *mpirun_cmd(ranks, *args)],
                          capture_output=True, text=True, env=ENV)


def start_on_hosts(ranks, *args, log, mpi_options=()):
    return subprocess.Popen(mpirun_cmd(ranks, *args, mpi_options=mpi_options), stdout=log, stderr=subprocess.STDOUT,
                            env=ENV, start_new_session=True)


def runs(path):
    """[(run id, attributes)] in run order."""
    with h5py.File(path, "r") as f:
        order = [x.decode() if isinstance(x, bytes) else x for x in f["run_order"][()]]
        return [(i, dict(f["runs"][i].attrs)) for i in order]


def hosts_of(path):
    with h5py.File(path, "r") as f:
        return list(f["provenance"]["hosts"].asstr()[()])


def wait_for_runs(path, count, proc, timeout_s=240):
    """Waits until `path` holds at least `count` runs (the file is replaced atomically, so a read
    sees a whole file); returns their ids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {count} run(s)")
        if path.exists():
            try:
                ids = [i for i, _ in runs(path)]
            except OSError:
                ids = []
            if len(ids) >= count:
                return ids
        time.sleep(0.1)
    raise AssertionError(f"no {count} run(s) in {path} after {timeout_s} s")


def rank_pids(host):
    """Process ids of the quilt rank(s) running on test-bed host `host` (1-based)."""
    r = subprocess.run(["ip", "netns", "pids", f"qtb-h{host}"], capture_output=True, text=True)
    pids = []
    for p in r.stdout.split():
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == "quilt":
                pids.append(int(p))
        except OSError:
            pass
    return pids
