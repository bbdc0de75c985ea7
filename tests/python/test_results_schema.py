"""The HDF5 layout written by the C++ results writer, checked from h5py against results/SCHEMA.md.

Needs the CMake build directory in QUILT_BUILD_DIR (CTest sets it) with the program
tests/results/quilt_results_example built; it writes tests/results/sample_record.h's record.
"""

import os
import pathlib
import subprocess

import h5py
import numpy as np
import pytest

SCHEMA_VERSION = 2
RUN_ORDER = ["r-zz01", "r-aa02", "r-mm03"]  # as in tests/results/sample_record.h

ROOT_ATTRS = {"quilt_format": str, "schema_version": np.integer, "name": str,
              "experiment_hash": str}
PROVENANCE_ATTRS = {
    "quilt_version": str, "git_commit": str, "git_dirty": np.integer, "torch_version": str,
    "mpi_version": str, "hdf5_version": str, "xrt_version": str, "compiler": str,
    "command_line": str, "experiment_path": str, "created_utc": str, "start_utc": str,
    "end_utc": str, "scale": str,
}
RUN_ATTRS = {
    "status": str, "failure": str, "batch_size": np.integer, "warmup_batches": np.integer,
    "measured_batches": np.integer, "start_unix_s": np.floating, "end_unix_s": np.floating,
    "throughput_sps": np.floating, "duration_s": np.floating, "latency_p50_s": np.floating,
    "latency_p90_s": np.floating, "latency_p99_s": np.floating, "max_abs_error": np.floating,
    "failed_rank": np.integer, "repetitions": np.integer, "throughput_median_sps": np.floating,
    "throughput_mean_sps": np.floating, "throughput_std_sps": np.floating,
    "throughput_ci95_low_sps": np.floating, "throughput_ci95_high_sps": np.floating,
    "validity": str, "precision": str, "element_bytes": np.integer, "time_model": str, "dilation": np.floating, "overruns": np.integer,
    "cpu_wait_fraction": np.floating,
    "energy_j": np.floating, "energy_per_sample_j": np.floating, "energy_source": str,
    "complete": np.integer,
}
RUN_DATASETS = {
    "latency_s": "f8", "cut_names": "str", "cut_bytes_per_sample": "i8",
    "cut_wire_bytes_per_sample": "i8", "cut_requested_rate": "f8", "cut_effective_rate": "f8",
    "repetition_throughput_sps": "f8", "repetition_duration_s": "f8", "invalid_reasons": "str",
}
CHECK_ATTRS = {"metric": str, "value": np.floating, "reference": np.floating,
               "tolerance": np.floating, "better": str, "passed": np.integer}
STAGE_ATTRS = {
    "rank": np.integer, "host": str, "board": str, "board_description": str, "units": str,
    "bytes_sent": np.integer, "bytes_received": np.integer,
    "predicted_compute_s": np.floating, "predicted_comm_s": np.floating,
    "predicted_exec_s": np.floating, "busy_s": np.floating, "energy_j": np.floating,
}
STAGE_DATASETS = {"in_shape": "i8", "out_shape": "i8", "compute_s": "f8", "recv_wait_s": "f8",
                  "send_wait_s": "f8", "h2d_s": "f8", "d2h_s": "f8"}


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    build_dir = os.environ.get("QUILT_BUILD_DIR")
    if not build_dir:
        pytest.skip("QUILT_BUILD_DIR is not set: point it at the CMake build directory "
                    "(CTest's results_python test sets it)")
    example = pathlib.Path(build_dir) / "tests" / "results" / "quilt_results_example"
    if not example.exists():
        pytest.fail(f"{example} not found: build the quilt_results_example target first")
    path = tmp_path_factory.mktemp("results") / "sample.h5"
    subprocess.run([str(example), str(path)], check=True)
    # The writer's temporary file is renamed away on success.
    assert sorted(p.name for p in path.parent.iterdir()) == ["sample.h5"]
    with h5py.File(path, "r") as f:
        yield f


def check_attrs(obj, expected):
    assert set(obj.attrs.keys()) == set(expected), obj.name
    for name, kind in expected.items():
        value = obj.attrs[name]
        if kind is str:
            assert isinstance(value, str), f"{obj.name} attribute {name}: {type(value)}"
            assert h5py.check_string_dtype(obj.attrs.get_id(name).dtype).encoding == "utf-8"
        else:
            assert np.ndim(value) == 0, f"{obj.name} attribute {name} is not a scalar"
            assert np.issubdtype(np.asarray(value).dtype, kind), f"{obj.name} attribute {name}"
            assert np.asarray(value).dtype.itemsize == 8, f"{obj.name} attribute {name}"


def check_datasets(group, expected, extra=()):
    assert set(group.keys()) == set(expected) | set(extra), group.name
    for name, kind in expected.items():
        ds = group[name]
        assert isinstance(ds, h5py.Dataset), ds.name
        assert ds.ndim == 1, ds.name
        if kind == "str":
            assert h5py.check_string_dtype(ds.dtype).encoding == "utf-8", ds.name
        else:
            assert ds.dtype == np.dtype("<" + kind), ds.name


def test_root(results_file):
    f = results_file
    check_attrs(f, ROOT_ATTRS)
    assert f.attrs["quilt_format"] == "quilt-results"
    assert f.attrs["schema_version"] == SCHEMA_VERSION
    assert f.attrs["name"] == "efficiency"
    assert set(f.keys()) == {"provenance", "runs", "run_order"}
    assert list(f["run_order"].asstr()[()]) == RUN_ORDER


def test_provenance(results_file):
    g = results_file["provenance"]
    check_attrs(g, PROVENANCE_ATTRS)
    assert set(g.keys()) == {"hosts", "boards", "experiment_text", "resolved_experiment"}
    check_datasets(g, {"hosts": "str", "boards": "str"},
                   extra=("experiment_text", "resolved_experiment"))
    assert list(g["hosts"].asstr()[()]) == ["node0.cluster", "node1.cluster"]
    assert list(g["boards"].asstr()[()]) == ["CPU emulator (1 thread, oneDNN)", "null backend"]
    for name in ("experiment_text", "resolved_experiment"):
        assert g[name].shape == (), name
        assert h5py.check_string_dtype(g[name].dtype).encoding == "utf-8", name
    assert g["experiment_text"].asstr()[()].startswith("name: efficiency\n")
    assert g["resolved_experiment"].asstr()[()].startswith("runs:\n")
    assert g.attrs["scale"] == "small"
    assert g.attrs["start_utc"] == "2024-05-01T13:00:00Z"
    assert g.attrs["git_dirty"] == 1


def test_runs(results_file):
    runs = results_file["runs"]
    assert any("trace" in runs[r] for r in RUN_ORDER)  # the sample has one traced run
    assert set(runs.keys()) == set(RUN_ORDER)
    for run_id in RUN_ORDER:
        run = runs[run_id]
        check_attrs(run, RUN_ATTRS)
        assert run.attrs["complete"] == 1
        assert run.attrs["status"] in ("ok", "failed")
        traced = "trace" in run
        check_datasets(run, RUN_DATASETS,
                       extra=("params", "stages", "checks") + (("trace",) if traced else ()))
        if traced:  # SCHEMA.md "/runs/<run id>/trace"
            t = run["trace"]
            check_attrs(t, {"clock": str, "dropped_events": np.integer, "max_batches": np.integer})
            check_datasets(t, {"phases": "str", "rank": "i8", "batch": "i8", "repetition": "i8",
                               "phase": "i8", "start_s": "f8", "end_s": "f8"})
            assert t.attrs["clock"] in ("wall", "board")
            assert len({t[n].shape[0] for n in ("rank", "batch", "phase", "start_s")}) == 1
        assert run.attrs["validity"] in ("valid", "invalid")
        assert (run.attrs["validity"] == "invalid") == (run["invalid_reasons"].shape[0] > 0)
        assert run.attrs["failed_rank"] == (1 if run.attrs["status"] == "failed" else -1)
        repetitions = int(run.attrs["repetitions"])
        assert run["repetition_throughput_sps"].shape == (repetitions,)
        assert run["repetition_duration_s"].shape == (repetitions,)
        assert (run.attrs["throughput_ci95_low_sps"] <= run.attrs["throughput_mean_sps"]
                <= run.attrs["throughput_ci95_high_sps"])
        checks = run["checks"]
        assert isinstance(checks, h5py.Group) and len(checks.attrs) == 0
        check_names = sorted(checks.keys(), key=int)
        assert check_names == [str(k) for k in range(len(check_names))]
        assert len(check_names) == (12 if run_id == "r-aa02" else 2)
        for k in check_names:
            check = checks[k]
            assert isinstance(check, h5py.Group) and len(check.keys()) == 0
            check_attrs(check, CHECK_ATTRS)
            assert check.attrs["better"] in ("higher", "lower")
            assert check.attrs["passed"] in (0, 1)
        params = run["params"]
        assert isinstance(params, h5py.Group) and len(params.keys()) == 0
        assert params.attrs["model"] == "resnet50"
        assert all(isinstance(v, str) for v in params.attrs.values())
        stage_names = sorted(run["stages"].keys(), key=int)
        assert stage_names == [str(k) for k in range(len(stage_names))]
        cuts = len(stage_names) - 1
        for name in RUN_DATASETS:
            if name.startswith("cut_"):
                assert run[name].shape == (cuts,), name
            elif name == "latency_s":
                assert run[name].shape == (5,), name
        for k in stage_names:
            stage = run["stages"][k]
            check_attrs(stage, STAGE_ATTRS)
            check_datasets(stage, STAGE_DATASETS)
            assert stage.attrs["rank"] == int(k)
            assert stage["compute_s"].shape == (run.attrs["measured_batches"],)


def test_readme_example(results_file):
    # The example of results/SCHEMA.md: throughput per run, in the order the runs were written.
    f = results_file
    rows = []
    for run_id in f["run_order"].asstr()[()]:
        run = f["runs"][run_id]
        rows.append((run_id, run["params"].attrs.get("autoencoder.rate"),
                     float(run.attrs["throughput_sps"])))
    assert [r[0] for r in rows] == RUN_ORDER
    assert rows[1] == ("r-aa02", "2", pytest.approx(124.456))


def test_schema_md_documents_every_name(results_file):
    # Every attribute and dataset name in the file appears in SCHEMA.md.
    schema = (pathlib.Path(__file__).resolve().parents[2] / "results" / "SCHEMA.md").read_text()
    names = set()

    def visit(name, obj):
        names.add(name.rsplit("/", 1)[-1])
        if not name.endswith("/params"):
            names.update(obj.attrs.keys())

    results_file.visititems(visit)
    names.update(results_file.attrs.keys())
    names -= set(RUN_ORDER) | {str(k) for k in range(20)}
    missing = sorted(n for n in names if f"`{n}`" not in schema and f"/{n}`" not in schema)
    assert not missing, f"not documented in results/SCHEMA.md: {missing}"
    assert f"Schema version: {SCHEMA_VERSION}" in schema
