#!/usr/bin/python3
"""Each stage of a TorchScript model on the emulator's path (C++ torch::jit::freeze, then the
stage compiler's lowering by operation, backends/inference.h) against Python's
torch.jit.optimize_for_inference of the very same stage graph, same batch, one thread, run
alternately (C++ binary, then Python, per model, --rounds times); prints the median seconds per
batch and the median over the rounds of the ratio python/quilt with its range (>= 1: the emulator
is at least as fast).

Usage: /usr/bin/python3 bench/torchscript_vs_pytorch.py --build build/release [--batch 8]
Writes the models with torchvision (MobileNetV3-small, a tiny ViT) into a temp dir. (VGG at
64x64 is left out: Python's optimize_for_inference itself fails on its 2x2 -> 7x7 adaptive pool.)
"""
# One thread everywhere (OpenMP, OpenBLAS, MKL), before torch is imported; the C++ binary
# inherits the same variables. Without it OpenBLAS runs the ViT's matmuls on every core.
import _common  # noqa: F401

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402

CASES = [
    ("mobilenet_v3_small", "3,224,224", ["after_features.8"]),
    ("vit", "3,64,64", ["after_encoder.layers.encoder_layer_1.ln_2"]),
]


def write_models(d):
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small().eval()
    torch.jit.save(torch.jit.script(m), os.path.join(d, "mobilenet_v3_small.pt"))
    t = torchvision.models.VisionTransformer(image_size=64, patch_size=8, num_layers=4,
                                             num_heads=4, hidden_dim=128, mlp_dim=256,
                                             num_classes=10).eval()
    torch.jit.save(torch.jit.script(t), os.path.join(d, "vit.pt"))


def python_median(path, shapes, batch, repeats):
    m = torch.jit.load(path).eval()
    opt = torch.jit.optimize_for_inference(torch.jit.freeze(m))
    xs = [torch.randn(batch, *s) for s in shapes]
    with torch.no_grad():
        for _ in range(3):
            opt(*xs)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            opt(*xs)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5,
                    help="C++ then Python, this many times per model; the ratio is the median "
                         "of the rounds' ratios (a change of load hits both sides of a round)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    binary = os.path.join(a.build, "bench", "quilt_bench_torchscript")
    with tempfile.TemporaryDirectory() as d:
        write_models(d)
        print(f"{'model':<20} {'stage':>5} {'quilt ms':>10} {'python ms':>10} {'python/quilt':>13} "
              f"{'min':>6} {'max':>6}   ({a.rounds} rounds, medians)")
        summaries = []
        for name, shape, cuts in CASES:
            per_stage = {}  # stage -> [(quilt_s, python_s), ...]
            stage_shapes = {}  # stage -> its inputs' shapes (the same every round)
            for r in range(a.rounds):
                run = subprocess.run([binary, os.path.join(d, name + ".pt"), shape, str(a.batch),
                                      d, str(a.repeats), *cuts], capture_output=True, text=True,
                                     check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
                if r == 0:
                    summaries.extend(f"{name} {line}" for line in run.stderr.splitlines()
                                     if line.startswith("stage "))
                for line in run.stdout.splitlines():
                    f = line.split()
                    k, quilt_s = int(f[1]), float(f[3])
                    # The stage's inputs: the packed shape is split again by the stage module's
                    # own arguments; read their shapes from a graph run on the first stage's
                    # input, once.
                    if k not in stage_shapes:
                        m = torch.jit.load(os.path.join(d, f"stage{k}.pt"))
                        stage_shapes[k] = stage_input_shapes(m, d, k, name, shape)
                    py_s = python_median(os.path.join(d, f"stage{k}.pt"), stage_shapes[k],
                                         a.batch, a.repeats)
                    per_stage.setdefault(k, []).append((quilt_s, py_s))
            for k, pairs in sorted(per_stage.items()):
                ratios = sorted(p / q for q, p in pairs)
                q_ms = statistics.median(q for q, _ in pairs) * 1e3
                p_ms = statistics.median(p for _, p in pairs) * 1e3
                print(f"{name:<20} {k:>5} {q_ms:>10.3f} {p_ms:>10.3f} "
                      f"{statistics.median(ratios):>13.2f} {ratios[0]:>6.2f} {ratios[-1]:>6.2f}")
        for s in summaries:
            print(s)


_outputs = {}


def stage_input_shapes(m, d, k, name, shape):
    # Stage 0 takes the model input; stage k > 0 takes what stage k - 1 returned.
    if k == 0:
        shapes = [tuple(int(x) for x in shape.split(","))]
    else:
        shapes = [tuple(t.shape[1:]) for t in _outputs[(name, k - 1)]]
    with torch.no_grad():
        y = m(*[torch.randn(2, *s) for s in shapes])
    _outputs[(name, k)] = list(y) if isinstance(y, tuple) else [y]
    return shapes


if __name__ == "__main__":
    sys.exit(main())
