#!/usr/bin/python3
"""Quilt's emulator fast path against PyTorch's own best CPU inference path, side by side.

Builds the same two pipeline stages as bench/emulator_bench.cc from torchvision's ResNet-50 cut
after layer3 (stage 0 = stem..layer3 [+ encoder], stage 1 = [decoder +] layer4 + head; the
autoencoder for R = 64 is a 1x1 Conv2d 1024 -> 16 and back, with bias), applies
torch.jit.optimize_for_inference(torch.jit.script(stage.eval())) at one thread, and measures
images/s at batch 8 the way Google Benchmark does for the C++ side: warm-up, then 5 repetitions of
at least 0.6 s each (3 s in all), median of the repetitions. For each stage it then runs the C++
benchmark binary for the same stage with --benchmark_format=json (PyTorch and Quilt alternate, so
that a change of load affects both sides of a ratio alike), and prints one table.

Run with Debian's Python (the one that sees python3-torch and python3-torchvision):

    /usr/bin/python3 bench/emulator_vs_pytorch.py build/backends/bench/quilt_bench_emulator

Measure on a quiet machine: the table prints the load average before and after.
"""

# One thread everywhere, before torch is imported (OpenMP and OpenBLAS read these at load).
import _common  # before torch: pins the thread counts

import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402

BATCH = 8
CUT_CHANNELS = 1024  # ResNet-50 after layer3: 1024 x 14 x 14


def stages(model, rate):
    """Stage 0 and stage 1 of ResNet-50 cut after layer3, with the autoencoder for `rate`."""
    enc, dec = [], []
    if rate > 1:
        code = math.ceil(CUT_CHANNELS / rate)
        enc = [torch.nn.Conv2d(CUT_CHANNELS, code, 1, bias=True)]
        dec = [torch.nn.Conv2d(code, CUT_CHANNELS, 1, bias=True)]
    m = model
    s0 = torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3,
                             *enc)
    s1 = torch.nn.Sequential(*dec, m.layer4, m.avgpool, torch.nn.Flatten(1), m.fc)
    return s0.eval(), s1.eval()


def images_per_s(fn, x, repetitions, min_time_s):
    """Median over `repetitions` of the mean rate of a repetition lasting >= min_time_s, by wall
    clock and by process CPU time (the latter is less disturbed by other load on the machine)."""
    for _ in range(3):  # warm-up: JIT profiling runs, oneDNN kernel generation
        fn(x)
    wall, cpu = [], []
    for _ in range(repetitions):
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            fn(x)
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time_s:
                break
        wall.append(n * x.shape[0] / elapsed)
        cpu.append(n * x.shape[0] / (time.process_time() - c0))
    return statistics.median(wall), statistics.median(cpu)


def ofi_stages():
    """(stage, R) -> (optimize_for_inference module, input), checked against eager."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    out = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rate in (1, 64):
            s0, s1 = stages(model, rate)
            x0 = torch.randn(BATCH, 3, 224, 224)
            x1 = s0(x0)
            for k, stage, x in ((0, s0, x0), (1, s1, x1)):
                ofi = torch.jit.optimize_for_inference(torch.jit.script(stage))
                ref = stage(x)
                err = ((ofi(x) - ref).abs().max() / ref.abs().max()).item()
                if err > 1e-4:
                    sys.exit(f"optimize_for_inference changed the result of stage {k}: {err}")
                out[(k, rate)] = (ofi, x)
    return out


def quilt_rate(binary, stage, rate):
    """(wall, cpu) img/s of the C++ benchmark's median repetition for one stage."""
    name = f"resnet50_after_layer3/emulator/stage:{stage}/R:{rate}/"
    for b in _common.benchmarks(binary, "--benchmark_filter=" + name):
        if b.get("aggregate_name") != "median":
            continue
        fields = dict(p.split(":", 1) for p in b["run_name"].split("/") if ":" in p)
        if int(fields["stage"]) != stage or int(float(fields["R"])) != rate:
            continue
        return b["items_per_second"], _common.items_per_cpu_s(b, int(fields["batch"]))
    sys.exit(f"{binary} reported no median for {name}")


def main():
    args = _common.parser(__doc__, "path to quilt_bench_emulator", 0.6).parse_args()

    torch.set_num_threads(1)
    load_before = _common.load_average()
    print("preparing PyTorch optimize_for_inference stages ...", file=sys.stderr, flush=True)
    ofi = ofi_stages()
    # PyTorch and Quilt alternate stage by stage, so that a change of load on the machine
    # affects both sides of a ratio alike.
    py, qu = {}, {}
    with torch.no_grad():
        for rate in (1, 64):
            for k in (0, 1):
                fn, x = ofi[(k, rate)]
                py[(k, rate)] = images_per_s(fn, x, args.repetitions, args.min_time)
                qu[(k, rate)] = quilt_rate(args.binary, k, rate)
                print(f"  stage {k} R={rate}: ofi {py[(k, rate)][0]:.2f}, "
                      f"quilt {qu[(k, rate)][0]:.2f} img/s", file=sys.stderr, flush=True)
    load_after = _common.load_average()
    context = {"num_cpus": os.cpu_count()}

    print(f"ResNet-50 cut after layer3, batch {BATCH}, 224x224, 1 thread "
          f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{context.get('num_cpus', '?')} CPUs)")
    print(f"load average before: {load_before}; after: {load_after}")
    print("img/s by wall clock; in brackets by process CPU time (less sensitive to other load)")
    print(f"{'stage':>5} {'R':>4} {'PyTorch ofi img/s':>20} {'Quilt img/s':>16} {'ratio':>12}")
    for rate in (1, 64):
        for k in (0, 1):
            p, q = py.get((k, rate)), qu.get((k, rate))
            if p is None or q is None:
                print(f"{k:>5} {rate:>4} {'missing':>20}")
                continue
            print(f"{k:>5} {rate:>4} {p[0]:>9.2f} ({p[1]:>7.2f}) {q[0]:>6.2f} ({q[1]:>7.2f})"
                  f" {q[0] / p[0]:>5.2f} ({q[1] / p[1]:.2f})")


if __name__ == "__main__":
    main()
