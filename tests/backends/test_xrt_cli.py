"""The XRT backend through the CLI, on XRT's noop shim (XCL_EMULATION_MODE=noop).

`quilt boards` lists the simulated devices and measures (meaningless) bandwidth; `mpirun -n 2
quilt run` of a tiny experiment with `backend: xrt` and a synthetic xclbin completes and writes
its result file; a device index that does not exist fails the run with a clear message on every
rank and the job exits (no hang); `fallback: emulator` runs the stage on the emulator instead.

Run with /usr/bin/python3 -m pytest (CTest sets QUILT_BUILD_DIR, QUILT_SOURCE_DIR, MPIEXEC).
Skips when the XRT backend is not built (no quilt_make_test_xclbin).
"""

import os
import pathlib
import subprocess

import pytest

BUILD = os.environ.get("QUILT_BUILD_DIR")
if not BUILD:
    pytest.skip("QUILT_BUILD_DIR is not set (run through ctest)", allow_module_level=True)
QUILT = pathlib.Path(BUILD) / "bin" / "quilt"
MAKE_XCLBIN = pathlib.Path(BUILD) / "tests" / "backends" / "quilt_make_test_xclbin"
MPIEXEC = os.environ.get("MPIEXEC") or "mpiexec"
if not MAKE_XCLBIN.exists():
    pytest.skip("the XRT backend is not built (QUILT_XRT=OFF or no libxrt-dev)",
                allow_module_level=True)

TIMEOUT_S = 120
CRASH_MARKERS = ("internal error", "terminate called", "Segmentation fault", "core dumped",
                 "what():")


def env(**extra):
    e = dict(os.environ)
    e.update({"XCL_EMULATION_MODE": "noop", "OMPI_ALLOW_RUN_AS_ROOT": "1",
              "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1",
              "OMP_NUM_THREADS": "1"})
    e.pop("XILINX_XRT", None)  # quilt must find the shims by itself
    e.update(extra)
    return e


def run(args, **extra):
    p = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, env=env(**extra))
    for marker in CRASH_MARKERS:
        assert marker not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def xclbin(tmp_path_factory):
    path = tmp_path_factory.mktemp("xclbin") / "stages.xclbin"
    subprocess.run([str(MAKE_XCLBIN), str(path)], check=True, timeout=30)
    return path


def experiment(tmp_path, xclbin, boards_extra=""):
    text = f"""quilt: 1
name: xrt_noop
model:
  arch: mlp
boards:
  count: 2
  backend: xrt
  xclbin: {xclbin}
{boards_extra}partition:
  cuts: [after_hidden1]
measurement:
  batch: 4
  warmup_batches: 1
  batches: 3
  check_outputs: false
output: {tmp_path / 'xrt.h5'}
"""
    path = tmp_path / "xrt.yaml"
    path.write_text(text)
    return path


def test_boards_lists_noop_devices_and_bandwidth():
    p = run([str(QUILT), "boards", "--size", "1,2", "--repeats", "3"],
            QUILT_XRT_NOOP_DEVICES="2")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "XRT 2." in out
    assert "noop shim is active" in out
    assert "XRT devices: 2" in out
    assert "unavailable" in out  # the noop shim gives no power reading
    assert "H2D GB/s" in out and "D2H GB/s" in out
    rows = [l.split() for l in out.splitlines() if l.split()[:1] in (["0"], ["1"])]
    assert sum(1 for r in rows if len(r) == 4) == 4, out  # 2 devices x 2 sizes
    assert "alveo-u200" in out and "cpu" in out


def test_boards_without_a_board_says_so():
    e = {"XCL_EMULATION_MODE": ""}
    p = run([str(QUILT), "boards", "--no-bandwidth"], **e)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "none found" in p.stdout
    assert "alveo-u200" in p.stdout


def test_boards_one_device_after_loading_an_xclbin(xclbin):
    p = run([str(QUILT), "boards", "--device", "1", "--xclbin", str(xclbin), "--size", "1",
             "--repeats", "2"], QUILT_XRT_NOOP_DEVICES="2")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [l.split() for l in p.stdout.splitlines() if len(l.split()) == 4]
    assert [r[:2] for r in rows if r[0] in ("0", "1")] == [["1", "1"]], p.stdout
    p = run([str(QUILT), "boards", "--device", "5"], QUILT_XRT_NOOP_DEVICES="2")
    assert p.returncode == 2
    assert "no device 5; this host has 2 (0..1)" in p.stderr


def test_boards_bad_option():
    p = run([str(QUILT), "boards", "--repeats", "0"])
    assert p.returncode == 2
    assert "--repeats" in p.stderr


def test_mpirun_xrt_experiment_completes(tmp_path, xclbin):
    path = experiment(tmp_path, xclbin)
    p = run([MPIEXEC, "-n", "2", str(QUILT), "run", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "xrt.h5").exists()
    import h5py
    with h5py.File(tmp_path / "xrt.h5", "r") as f:
        text = []
        f.visititems(lambda name, obj: text.append(
            " ".join(str(v) for v in obj.attrs.values())))
        blob = " ".join(text)
    assert "xrt" in blob and "quilt_stage1" in blob, blob[:2000]


def test_mpirun_bad_device_index_is_bad_input_on_every_rank(tmp_path, xclbin):
    path = experiment(tmp_path, xclbin, "  devices: [0, 9]\n")
    p = run([MPIEXEC, "-n", "2", str(QUILT), "run", str(path)])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "rank 1: no XRT device with index 9 (boards.devices)" in p.stderr, p.stderr
    assert not (tmp_path / "xrt.h5").exists()  # checked before any run: nothing written


def test_mpirun_missing_xclbin_or_kernel_is_bad_input(tmp_path, xclbin):
    path = experiment(tmp_path, tmp_path / "nope.xclbin")
    p = run([MPIEXEC, "-n", "2", str(QUILT), "run", str(path)])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "nope.xclbin` does not exist" in p.stderr, p.stderr
    # Two boards, but this xclbin has the kernel of stage 0 only.
    stage0 = tmp_path / "stage0.xclbin"
    subprocess.run([str(MAKE_XCLBIN), str(stage0), "quilt_stage0"], check=True, timeout=30)
    path = experiment(tmp_path, stage0)
    p = run([MPIEXEC, "-n", "2", str(QUILT), "run", str(path)])
    assert p.returncode == 2, p.stdout + p.stderr
    assert "kernel `quilt_stage1` (stage 1) is not in xclbin" in p.stderr, p.stderr
    assert not (tmp_path / "xrt.h5").exists()


def test_mpirun_fallback_to_emulator(tmp_path, xclbin):
    path = experiment(tmp_path, xclbin, "  devices: [0, 9]\n  fallback: emulator\n")
    p = run([MPIEXEC, "-n", "2", str(QUILT), "run", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr
    import h5py
    with h5py.File(tmp_path / "xrt.h5", "r") as f:
        text = []
        f.visititems(lambda name, obj: text.append(
            " ".join(str(v) for v in obj.attrs.values())))
        blob = " ".join(text)
    assert "WARNING: xrt board unavailable (no XRT device with index 9" in blob, blob[:3000]
    assert "fell back to emulator" in blob


def test_time_model_other_than_measured_is_refused(tmp_path, xclbin):
    path = experiment(tmp_path, xclbin, "  time_model: dilated\n")
    p = run([str(QUILT), "validate", str(path)])
    assert p.returncode == 2
    assert "`boards.time_model`: `dilated` cannot be honoured by `backend: xrt`" in p.stderr
