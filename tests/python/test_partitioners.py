"""The partitioners' Python bindings (quilt.search, brute_force, stage_costs, calibrate) checked
against a cost model and a brute force written here in Python, on random instances."""
import itertools
import math
import os
import random
import sys
from pathlib import Path

import pytest

from conftest import BUILD  # noqa: E402


@pytest.fixture(scope="module")
def quilt():
    if not BUILD:
        pytest.skip("QUILT_BUILD_DIR is not set (run through CTest)")
    try:
        import quilt as q
    except ImportError as e:
        pytest.skip(f"the quilt module is not built under {BUILD}/python: {e}")
    missing = [f for f in ("search", "brute_force", "stage_costs", "calibrate", "board_profile")
               if not hasattr(q, f)]
    if missing:
        pytest.skip(f"the quilt module lacks the partitioners' bindings ({', '.join(missing)}); "
                    "link partitioners/python_bindings.cc into quilt_python")
    return q


# ---- the cost model of partitioners/cost_model.h, independently in Python ----

def encoded_channels(c, rate):
    q = c / rate
    nearest = round(q)
    cc = nearest if abs(q - nearest) <= 1e-9 * max(1.0, q) else math.ceil(q)
    return max(1, int(cc))


def crossing_of(layer):
    return layer.get("crossing", [layer["out_shape"]] if "out_shape" in layer else [])


def ae_flops(shape, rate, kernel):
    if rate == 1:
        return 0
    c, code = shape[0], encoded_channels(shape[0], rate)
    if len(shape) == 1:
        return 2 * c * code
    return 2 * c * code * kernel * kernel * shape[1] * shape[2]


def wire_bytes(tensors, rate):
    total = 0
    for t in tensors:
        n = math.prod(t)
        total += 4 * (n if rate == 1 else n // t[0] * encoded_channels(t[0], rate))
    return total


def transfer(nbytes, gbps, latency):
    return 0.0 if nbytes == 0 else latency + nbytes / (gbps * 1e9)


def out_bytes(layer):
    return layer["out_bytes"] if "out_bytes" in layer else 4 * math.prod(layer["out_shape"])


def stage_exec(layers, board, first, end, input_bytes, batch, rate, kernel):
    """exec_s of one stage running layers[first:end] on `board` (a full board_profile dict)."""
    n = len(layers)
    eff_rate = board["peak_flops"] * board["efficiency"]
    t = 0.0
    for layer in layers[first:end]:
        m = layer.get("measured_s", {})
        t += m[board["name"]] if board["name"] in m else layer["flops"] / eff_rate
    ae = 0
    if first > 0:
        ae += sum(ae_flops(s, rate, kernel) for s in crossing_of(layers[first - 1]))
    if end < n:
        ae += sum(ae_flops(s, rate, kernel) for s in crossing_of(layers[end - 1]))
    compute = batch * t + batch * ae / eff_rate + board["overhead_s"]
    in_b = input_bytes if first == 0 else wire_bytes(crossing_of(layers[first - 1]), rate)
    out_b = out_bytes(layers[-1]) if end == n else wire_bytes(crossing_of(layers[end - 1]), rate)
    comm = transfer(batch * in_b, board["h2d_gbps"], board["link_latency_s"])
    comm += transfer(batch * out_b, board["d2h_gbps"], board["link_latency_s"])
    if end < n:
        comm += transfer(batch * out_b, board["mpi_gbps"], board["mpi_latency_s"])
    return compute + comm


def py_brute_force(layers, boards, k, objective, fixed, input_bytes, batch, rate, kernel):
    """Every admissible list of cuts with its (objective, max, sum), best first."""
    n = len(layers)
    allowed = [i for i in range(n - 1) if layers[i].get("cut_allowed", True)]
    fixed_idx = {next(i for i, l in enumerate(layers) if l["name"] == f) for f in fixed}
    rows = []
    for cuts in itertools.combinations(allowed, k - 1):
        if not fixed_idx <= set(cuts):
            continue
        bounds = [0] + [c + 1 for c in cuts] + [n]
        ex = [stage_exec(layers, boards[s], bounds[s], bounds[s + 1], input_bytes, batch, rate,
                         kernel) for s in range(k)]
        mx, sm = max(ex), sum(ex)
        rows.append((k * mx - sm if objective == "paper" else mx, list(cuts), ex))
    rows.sort(key=lambda r: r[0])
    return rows


def random_instance(rng, quilt):
    n = rng.randint(1, 10)
    layers = []
    for i in range(n):
        layer = {"name": f"L{i}", "flops": rng.choice([0, rng.randint(1, 2_000_000_000)]),
                 "cut_allowed": rng.random() < 0.8}
        if rng.random() < 0.3:
            layer["out_bytes"] = 4 * rng.randint(1, 1 << 16)
            layer["crossing"] = [[rng.randint(1, 512), rng.randint(1, 28), rng.randint(1, 28)]
                                 for _ in range(rng.randint(1, 3))]
        else:
            layer["out_shape"] = ([rng.randint(1, 4096)] if rng.random() < 0.3 else
                                  [rng.randint(1, 512), rng.randint(1, 56), rng.randint(1, 56)])
        if rng.random() < 0.2:
            layer["measured_s"] = {"b1": rng.random() * 1e-3}
        layers.append(layer)
    allowed = [i for i in range(n - 1) if layers[i]["cut_allowed"]]
    k = rng.randint(1, min(4, len(allowed) + 1))
    boards = [quilt.board_profile(name=f"b{rng.randint(0, 2)}",
                                  peak_flops=10 ** (11 + 2 * rng.random()),
                                  efficiency=0.1 + 0.9 * rng.random(),
                                  overhead_s=rng.choice([0.0, rng.random() * 1e-3]),
                                  h2d_gbps=1 + 15 * rng.random(), d2h_gbps=1 + 15 * rng.random(),
                                  link_latency_s=rng.random() * 1e-5,
                                  mpi_gbps=0.5 + 20 * rng.random(),
                                  mpi_latency_s=rng.random() * 1e-5) for _ in range(k)]
    fixed = [layers[i]["name"] for i in rng.sample(allowed, rng.randint(0, min(2, k - 1)))]
    return dict(layers=layers, boards=boards, k=k, objective=rng.choice(["paper", "minmax"]),
                fixed_cuts=fixed, batch=rng.choice([1, 8, 32]),
                input_bytes=rng.choice([0, 4 * 3 * 224 * 224]), rate=rng.choice([1, 2, 7.5, 64]),
                kernel=rng.choice([1, 3]))


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def test_search_equals_python_brute_force(quilt):
    rng = random.Random(2022)
    unique = 0
    for trial in range(400):
        inst = random_instance(rng, quilt)
        got = quilt.search(**inst)
        rows = py_brute_force(inst["layers"], inst["boards"], inst["k"], inst["objective"],
                              inst["fixed_cuts"], inst["input_bytes"], inst["batch"],
                              inst["rate"], inst["kernel"])
        best = rows[0]
        assert close(got["objective_s"], best[0]), (trial, got, best)
        assert set(inst["fixed_cuts"]) <= set(got["cut_names"])
        assert len(got["stages"]) == inst["k"]
        if len(rows) == 1 or rows[1][0] - best[0] > 1e-9 * abs(rows[1][0]):
            assert got["cuts"] == best[1], trial
            unique += 1
        # The C++ oracle agrees too, and the costs are those of Python's model.
        assert close(quilt.brute_force(**inst)["objective_s"], got["objective_s"])
        for s, stage in enumerate(got["stages"]):
            expect = stage_exec(inst["layers"], inst["boards"][s], stage["first_layer"],
                                stage["end_layer"], inst["input_bytes"], inst["batch"],
                                inst["rate"], inst["kernel"])
            assert close(stage["exec_s"], expect), (trial, s, stage, expect)
    assert unique > 200


def test_stage_costs_by_name_and_index(quilt):
    layers = [{"name": "a", "flops": 1000, "out_shape": [8, 4, 4]},
              {"name": "b", "flops": 2000, "out_shape": [16, 2, 2]},
              {"name": "c", "flops": 500, "out_shape": [10]}]
    board = quilt.board_profile(peak_flops=1e6, efficiency=0.5, overhead_s=1e-3)
    by_name = quilt.stage_costs(layers, board, ["a"], batch=4, input_bytes=768, rate=4, kernel=3)
    by_index = quilt.stage_costs(layers, board, [0], batch=4, input_bytes=768, rate=4, kernel=3)
    assert by_name == by_index
    s0, s1 = by_name["stages"]
    assert s0["ae_flops"] == 2 * 8 * 2 * 9 * 16
    assert s0["out_bytes"] == 2 * 4 * 4 * 4
    assert math.isclose(s0["compute_s"], 4 * 1000 / 5e5 + 4 * 4608 / 5e5 + 1e-3, rel_tol=1e-12)
    assert s1["mpi_s"] == 0
    assert math.isclose(s1["d2h_s"], 4 * 40 / 11.7e9, rel_tol=1e-12)
    assert math.isclose(by_name["imbalance_s"], 2 * by_name["max_exec_s"] - by_name["sum_exec_s"])


def test_board_profile_defaults_are_the_papers_links(quilt):
    b = quilt.board_profile(name="u200", peak_flops=1e12)
    assert b["h2d_gbps"] == 9.2 and b["d2h_gbps"] == 11.7
    assert b["efficiency"] == 1.0 and b["name"] == "u200"


def test_accepts_summary_unit_dicts(quilt):
    units = [{"name": "stem", "in_shape": [3, 224, 224], "out_shape": [64, 56, 56],
              "flops": 236_027_904, "macs": 118_013_952, "params": 9536, "out_bytes": 802_816},
             {"name": "head", "in_shape": [64, 56, 56], "out_shape": [1000], "flops": 128_000,
              "params": 65_000, "out_bytes": 4000}]
    r = quilt.search(units, quilt.board_profile(peak_flops=1e12), 2, objective="minmax")
    assert r["cut_names"] == ["stem"]


def test_calibrate_recovers_efficiency_and_overhead(quilt):
    rng = random.Random(1)
    board = quilt.board_profile(name="u200", peak_flops=1e12)
    samples = []
    for _ in range(100):
        f = rng.uniform(1e8, 2e10)
        samples.append((f, (f / (1e12 * 0.3) + 1e-3) * (1 + rng.gauss(0, 0.003))))
    fit = quilt.calibrate(board, samples)
    assert abs(fit["board"]["efficiency"] - 0.3) < 0.01 * 0.3
    assert abs(fit["board"]["overhead_s"] - 1e-3) < 0.15e-3
    assert fit["r_squared"] > 0.999 and fit["samples"] == 100
    dict_samples = [{"flops": f, "measured_s": t} for f, t in samples]
    assert quilt.calibrate(board, dict_samples) == fit


def test_errors_are_value_errors_naming_the_problem(quilt):
    layers = [{"name": f"L{i}", "flops": 10, "out_shape": [4]} for i in range(3)]
    board = quilt.board_profile(peak_flops=1e3)
    assert issubclass(quilt.PartitionError, ValueError)
    with pytest.raises(quilt.PartitionError, match=r"k = 4 .*between 1 and 3"):
        quilt.search(layers, board, 4)
    with pytest.raises(quilt.PartitionError, match=r"no layer named 'nope'.*L0, L1, L2"):
        quilt.search(layers, board, 2, fixed_cuts=["nope"])
    with pytest.raises(quilt.PartitionError, match=r"unknown objective 'fast'"):
        quilt.search(layers, board, 2, objective="fast")
    with pytest.raises(quilt.PartitionError, match=r"unknown key 'peak_flop'"):
        quilt.search(layers, {"peak_flop": 1e3}, 2)
    with pytest.raises(quilt.PartitionError, match=r"at least 2"):
        quilt.calibrate(board, [(1e9, 1e-3)])
    with pytest.raises(quilt.PartitionError, match=r"k = 0"):
        quilt.search(layers, board, 0)
