"""Schema-complete Quilt result files (results/SCHEMA.md) written with h5py from short specs, for
the tests of quilt.results and analysis/. Every object the C++ reader requires is written; a spec
gives only what a test cares about.

    write(path, [pipeline(arch="resnet50", rate=64, sps=120.0, stages=[(0.01, 0.001, 0.001)]),
                 training(mode="scratch", rate=1, top1=[0.5, 0.9], params={"data.kind": "x"})])
"""
import numpy as np

import h5py

STR = h5py.string_dtype("utf-8")


def pipeline(arch="resnet50", rate=1, sps=100.0, stages=((0.01, 0.0, 0.0), (0.01, 0.0, 0.0)),
             energy=-1.0, status="ok", failure="", time_model="modeled", params=None,
             cut="after_layer3", effective_rate=None, batches=4, validity="valid",
             invalid_reasons=(), checks=()):
    """A pipeline run: `stages` [(compute_s, h2d_s, d2h_s)] per stage (constant per batch)."""
    p = {"model.arch": arch, "autoencoder.rate": str(rate)}
    p.update({k: str(v) for k, v in (params or {}).items()})
    return {"kind": "pipeline", "params": p, "sps": sps, "stages": list(stages),
            "energy": energy, "status": status, "failure": failure, "time_model": time_model,
            "cut": cut, "rate": float(rate),
            "effective_rate": float(rate if effective_rate is None else effective_rate),
            "batches": batches, "validity": validity, "invalid_reasons": list(invalid_reasons),
            "checks": list(checks)}


def training(mode="scratch", rate=1, top1=(0.5, 0.9), loss=(1.0, 0.2), params=None,
             status="ok", failure="", classes=10, dataset="synthetic", stand_in="",
             phase="train", phases=None, speedup=-1.0, train_s=10.0, pretrain_top1=np.nan,
             phase1_epochs=0):
    """A training run with per-epoch top-1 and loss (equal lengths)."""
    p = {"autoencoder.rate": str(rate), "training.mode": mode}
    p.update({k: str(v) for k, v in (params or {}).items()})
    n = len(loss)
    return {"kind": "training", "params": p, "mode": mode, "top1": list(top1), "loss": list(loss),
            "status": status, "failure": failure, "classes": classes, "dataset": dataset,
            "stand_in": stand_in, "phases": list(phases or [phase] * n), "speedup": speedup,
            "train_s": train_s, "pretrain_top1": pretrain_top1, "phase1_epochs": phase1_epochs}


def _attrs(g, values):
    for k, v in values.items():
        if isinstance(v, str):
            g.attrs[k] = v
        elif isinstance(v, (bool, int, np.integer)):
            g.attrs[k] = np.int64(v)
        else:
            g.attrs[k] = np.float64(v)


def _ds(g, name, values, kind):
    if kind == "str":
        g.create_dataset(name, data=np.array(list(values), dtype=object), dtype=STR)
    else:
        g.create_dataset(name, data=np.asarray(list(values), dtype=kind))


def write(path, runs, name="test", scale="here"):
    """Writes the runs (pipeline()/training() specs) to `path`; run ids r00, r01, ..."""
    with h5py.File(path, "w") as f:
        _attrs(f, {"quilt_format": "quilt-results", "schema_version": 1, "name": name,
                   "experiment_hash": "h" + name})
        prov = f.create_group("provenance")
        _attrs(prov, {"quilt_version": "0", "git_commit": "abc", "git_dirty": 0,
                      "torch_version": "t", "mpi_version": "m", "hdf5_version": "h",
                      "xrt_version": "not built", "compiler": "c", "command_line": "test",
                      "experiment_path": "x.yaml", "created_utc": "2026-01-01T00:00:00Z",
                      "start_utc": "2026-01-01T00:00:00Z", "end_utc": "2026-01-01T00:00:01Z",
                      "scale": scale})
        _ds(prov, "hosts", ["h"], "str")
        _ds(prov, "boards", ["b"], "str")
        prov.create_dataset("experiment_text", data="name: x\n", dtype=STR)
        prov.create_dataset("resolved_experiment", data="{}\n", dtype=STR)
        ids = []
        for i, r in enumerate(runs):
            rid = f"r{i:02d}"
            ids.append(rid)
            g = f.create_group(f"runs/{rid}")
            pipe = r["kind"] == "pipeline"
            n = r["batches"] if pipe else 0
            sps = r["sps"] if pipe else 0.0
            _attrs(g, {"status": r["status"], "failure": r["failure"], "batch_size": 8,
                       "warmup_batches": 1, "measured_batches": n, "start_unix_s": 1.0,
                       "end_unix_s": 2.0, "throughput_sps": sps, "duration_s": 1.0,
                       "latency_p50_s": 0.01, "latency_p90_s": 0.01, "latency_p99_s": 0.01,
                       "max_abs_error": -1.0, "failed_rank": -1, "repetitions": 1,
                       "throughput_median_sps": sps, "throughput_mean_sps": sps,
                       "throughput_std_sps": 0.0, "throughput_ci95_low_sps": sps,
                       "throughput_ci95_high_sps": sps,
                       "validity": r.get("validity", "valid"),
                       "time_model": r.get("time_model", "measured"), "dilation": 1.0,
                       "overruns": 0, "energy_j": -1.0,
                       "energy_per_sample_j": r.get("energy", -1.0),
                       "energy_source": "profile" if r.get("energy", -1) >= 0 else "unavailable"})
            _attrs(g.create_group("params"), r["params"])
            _ds(g, "latency_s", [0.01] * n, "f8")
            cuts = [r["cut"]] if pipe else []
            _ds(g, "cut_names", cuts, "str")
            _ds(g, "cut_bytes_per_sample", [1000] * len(cuts), "i8")
            _ds(g, "cut_wire_bytes_per_sample",
                [int(1000 / r["effective_rate"])] * len(cuts) if pipe else [], "i8")
            _ds(g, "cut_requested_rate", [r["rate"]] * len(cuts) if pipe else [], "f8")
            _ds(g, "cut_effective_rate", [r["effective_rate"]] * len(cuts) if pipe else [], "f8")
            _ds(g, "repetition_throughput_sps", [sps], "f8")
            _ds(g, "repetition_duration_s", [1.0], "f8")
            _ds(g, "invalid_reasons", r.get("invalid_reasons", []), "str")
            checks = g.create_group("checks")
            for k, (metric, passed) in enumerate(r.get("checks", [])):
                _attrs(checks.create_group(str(k)),
                       {"metric": metric, "value": 1.0, "reference": 1.0, "tolerance": 0.1,
                        "better": "higher", "passed": int(passed)})
            stages = g.create_group("stages")
            for k, (c, h, d) in enumerate(r["stages"] if pipe else []):
                s = stages.create_group(str(k))
                _attrs(s, {"rank": k, "host": "h", "board": "emulator",
                           "board_description": "emu", "units": f"u{k}", "bytes_sent": 100,
                           "bytes_received": 100, "predicted_compute_s": c,
                           "predicted_comm_s": h + d, "predicted_exec_s": c + h + d,
                           "busy_s": n * (c + h + d), "energy_j": -1.0})
                _ds(s, "in_shape", [3, 8, 8], "i8")
                _ds(s, "out_shape", [3, 8, 8], "i8")
                for nm, v in (("compute_s", c), ("recv_wait_s", 0.001), ("send_wait_s", 0.002),
                              ("h2d_s", h), ("d2h_s", d)):
                    _ds(s, nm, [v] * n, "f8")
            if not pipe:
                t = g.create_group("training")
                top1 = np.asarray(r["top1"], float)
                loss = np.asarray(r["loss"], float)
                m = len(loss)
                _attrs(t, {"mode": r["mode"], "dataset": r["dataset"], "data_source": "generated",
                           "stand_in": r["stand_in"], "train_samples": 100, "test_samples": 50,
                           "classes": r["classes"], "ranks": 1, "global_batch": 8,
                           "phase1_epochs": r["phase1_epochs"],
                           "final_test_loss": loss[-1] if m else np.nan,
                           "final_top1": top1[-1] if len(top1) else np.nan,
                           "final_top5": min(1.0, top1[-1] + 0.05) if len(top1) else np.nan,
                           "train_s": r["train_s"], "full_epoch_s": -1.0,
                           "proxy_speedup": r["speedup"], "checkpoint": "", "pretrained": "",
                           "pretrain_top1": r["pretrain_top1"]})
                _ds(t, "epoch", range(1, m + 1), "i8")
                _ds(t, "phase", r["phases"], "str")
                acc = top1 if len(top1) == m else np.full(m, np.nan)
                for nm, v in (("train_loss", loss), ("test_loss", loss), ("train_top1", acc),
                              ("test_top1", acc), ("test_top5", np.minimum(1, acc + 0.05)),
                              ("epoch_s", np.ones(m)), ("samples_per_s", np.ones(m))):
                    _ds(t, nm, v, "f8")
            g.attrs["complete"] = np.int64(1)
        _ds(f, "run_order", ids, "str")
    return ids
