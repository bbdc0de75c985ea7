#!/usr/bin/python3
"""Training throughput of Quilt's trainers against the same loop in Python (python3-torch).

One epoch of SGD (momentum 0.9) or Adam over synthetic data at one thread, for the same cases as
bench/train_bench.cc (CASES below): the historical pair (torchvision's ResNet-18 with 10 classes on
3x32x32, 512 samples per epoch; the paper's MLP 784-512-512-10, 8192 samples; SGD lr 0.01, batch
64) and what the accuracy experiments train at their `here` scale: ResNet-18 on 1x28x28 with SGD
lr 0.05, weight decay 5e-4 (accuracy, interposition_accuracy, weight_freezing), the same with an
R=64 autoencoder (1x1 Conv2d 256->4->256 with bias) after layer3, the same with Adam lr 0.001
(tradeoff), and the MLP 64-512-512-10 with Adam at batch 32 (feasibility); then the three
ResNet-18 cases at model.width 0.125 (`resnet18w8-*`: 8..64 channels, 2048 samples per epoch), which
is what the `here` scale trains since issue 10. The Python loop does
what trainers::train() does per batch: a seeded permutation per epoch, index_select of the batch,
forward, cross-entropy (sum / batch), backward, loss.item(), accuracy count, step; the optimizer
is torch.optim's default (for-loop) implementation, as a user gets it. Each side: one warm-up
epoch, then 5 repetitions of at least 1 s each (whole epochs); PyTorch and Quilt alternate
repetition by repetition, and the ratio is the median of the pairs' ratios (with their range):
this VM's speed changes in phases of tens of seconds (the same binary ran 6.4k and 9.5k samples/s
a minute apart, on either CPU, with or without ASLR), and a pair falls in one phase where the
medians of the two sides may not.
Samples/s by wall clock and by process CPU time.

Quilt's programs set glibc's malloc to keep freed memory (common/allocator.h: a fixed 32 MiB mmap
threshold, a 1 GiB trim threshold), so that a step's tensors are not page-faulted in afresh every
step. Python runs with glibc's defaults, as a user gets it; --same-allocator gives the Python
process the same two settings (through mallopt) to show how much of a ratio that part is.

Run with Debian's Python (the one that sees python3-torch and python3-torchvision):

    /usr/bin/python3 bench/train_vs_pytorch.py build/release/bench/quilt_bench_train
"""

# One thread everywhere, before torch is imported.
import _common  # before torch: pins the thread counts

import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

CASES = [  # (name as the C++ benchmark names it, arch, input shape, samples per epoch, batch,
    #    optimizer, lr, weight decay, autoencoder after layer3 (R) or None, ResNet width)
    ("resnet18", "resnet18", (3, 32, 32), 512, 64, "sgd", 0.01, 0.0, None, 1.0),
    ("mlp", "mlp", (784,), 8192, 64, "sgd", 0.01, 0.0, None, 1.0),
    ("resnet18-fmnist", "resnet18", (1, 28, 28), 512, 64, "sgd", 0.05, 5e-4, None, 1.0),
    ("resnet18-fmnist-ae64", "resnet18", (1, 28, 28), 512, 64, "sgd", 0.05, 5e-4, 64, 1.0),
    ("resnet18-fmnist-adam", "resnet18", (1, 28, 28), 512, 64, "adam", 0.001, 0.0, None, 1.0),
    ("mlp-uci", "mlp", (64,), 4096, 32, "adam", 0.001, 0.0, None, 1.0),
]
# The `here` scale's model since issue 10: the Fashion-MNIST ResNet-18 cases at model.width 0.125
# (8..64 channels), 2048 samples per epoch; as bench/train_bench.cc derives them.
CASES += [("resnet18w8" + c[0][len("resnet18"):], c[1], c[2], 2048, *c[4:9], 0.125)
          for c in CASES if c[0].startswith("resnet18-fmnist")]


def scaled(planes, width):
    """models::ResNetImpl::scaled_planes: round half away from zero, at least 1."""
    return max(1, math.floor(planes * width + 0.5))


def narrow_resnet18(model, in_channels, width):
    """torchvision's ResNet-18 rebuilt with every width (stem, stages) times `width`, as
    model.width does in Quilt (models/resnet.cc), with torchvision's initialisation."""
    from torchvision.models.resnet import BasicBlock
    w = [scaled(c, width) for c in (64, 128, 256, 512)]
    model.inplanes = w[0]
    model.conv1 = torch.nn.Conv2d(in_channels, w[0], 7, 2, 3, bias=False)
    model.bn1 = torch.nn.BatchNorm2d(w[0])
    model.layer1 = model._make_layer(BasicBlock, w[0], 2)
    model.layer2 = model._make_layer(BasicBlock, w[1], 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, w[2], 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, w[3], 2, stride=2)
    model.fc = torch.nn.Linear(w[3], model.fc.out_features)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(m.weight, 1)
            torch.nn.init.constant_(m.bias, 0)
    return model


def build(arch, shape, rate, width=1.0):
    torch.manual_seed(0)
    if arch == "resnet18":
        model = torchvision.models.resnet18(num_classes=10)
        if width != 1.0:
            model = narrow_resnet18(model, shape[0], width)
        elif shape[0] != 3:
            model.conv1 = torch.nn.Conv2d(shape[0], 64, 7, 2, 3, bias=False)
        if rate:
            c3 = scaled(256, width)
            code = -(-c3 // rate)  # ceil, as models::encoded_channels
            model.layer3 = torch.nn.Sequential(model.layer3, torch.nn.Conv2d(c3, code, 1),
                                               torch.nn.Conv2d(code, c3, 1))
        return model
    return torch.nn.Sequential(torch.nn.Linear(shape[0], 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 10))


def epoch(model, opt, x, y, gen, batch):
    model.train()
    n = x.shape[0]
    perm = torch.randperm(n, generator=gen)
    loss_sum, correct = 0.0, 0
    for first in range(0, n, batch):
        idx = perm[first:first + batch]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb, reduction="sum") / idx.shape[0]
        loss.backward()
        loss_sum += loss.item() * idx.shape[0]
        correct += out.detach().argmax(1).eq(yb).sum().item()
        opt.step()
    return loss_sum / n, correct


class PyTorchSide:
    """The model, optimizer and data of one case, warmed up once; rate() measures one repetition."""

    def __init__(self, arch, shape, samples, batch, optimizer, lr, weight_decay, rate, width):
        self.model = build(arch, shape, rate, width)
        if optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9,
                                       weight_decay=weight_decay)
        self.gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(samples, *shape)
        self.y = torch.randint(0, 10, (samples,))
        self.samples = samples
        self.batch = batch
        self.run()  # warm-up

    def run(self):
        epoch(self.model, self.opt, self.x, self.y, self.gen, self.batch)

    def rate(self, min_time_s):
        """(wall, cpu) samples/s over whole epochs lasting >= min_time_s."""
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            self.run()
            n += self.samples
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time_s:
                break
        return n / elapsed, n / (time.process_time() - c0)


def keep_freed_memory():
    """What quilt::common::keep_freed_memory() does, for this Python process."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if not (libc.mallopt(m_mmap_threshold, 32 << 20) == 1
            and libc.mallopt(m_trim_threshold, 1 << 30) == 1):
        sys.exit("mallopt refused Quilt's allocator settings")


def quilt_rate(binary, arch, samples, min_time_s):
    """(wall, cpu) samples/s of one repetition of the C++ benchmark."""
    for b in _common.benchmarks(binary, f"--benchmark_filter=train/{arch}/",
                                f"--benchmark_min_time={min_time_s}",
                                "--benchmark_repetitions=1"):
        if b["run_name"].startswith(f"train/{arch}/") and b.get("run_type") == "iteration":
            return b["items_per_second"], _common.items_per_cpu_s(b, samples)
    sys.exit(f"{binary} reported nothing for train/{arch}/")


def main():
    ap = _common.parser(__doc__, "path to quilt_bench_train", 1.0)
    ap.add_argument("--cases", nargs="*", help="names of the cases to run (default: all)")
    ap.add_argument("--same-allocator", action="store_true",
                    help="give Python's malloc Quilt's settings (common/allocator.h)")
    args = ap.parse_args()
    if args.same_allocator:
        keep_freed_memory()
    torch.set_num_threads(1)
    load_before = _common.load_average()
    rows = []
    ap_cases = [c for c in CASES if not args.cases or c[0] in args.cases]
    for name, arch, shape, samples, batch, optimizer, lr, wd, rate, width in ap_cases:
        side = PyTorchSide(arch, shape, samples, batch, optimizer, lr, wd, rate, width)
        py, qu = [], []
        # One repetition of each side at a time, alternating, so that a change of load on the
        # machine affects both sides alike; the median of the repetitions counts.
        for _ in range(args.repetitions):
            py.append(side.rate(args.min_time))
            qu.append(quilt_rate(args.binary, name, samples, args.min_time))
        pairs = sorted(q[0] / p[0] for p, q in zip(py, qu))
        pairs_cpu = sorted(q[1] / p[1] for p, q in zip(py, qu))
        ratio = (statistics.median(pairs), statistics.median(pairs_cpu), pairs[0], pairs[-1])
        py = tuple(statistics.median(v[i] for v in py) for i in (0, 1))
        qu = tuple(statistics.median(v[i] for v in qu) for i in (0, 1))
        print(f"  {name}: PyTorch {py[0]:.1f}, Quilt {qu[0]:.1f} samples/s", file=sys.stderr,
              flush=True)
        rows.append((name, shape, batch, optimizer, py, qu, ratio))
    print(f"training throughput, 1 thread "
          f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs)")
    print(f"load average before: {load_before}; after: {_common.load_average()}")
    print("Python's malloc: " + ("Quilt's settings (--same-allocator)" if args.same_allocator
                                 else "glibc's defaults"))
    print("samples/s by wall clock (medians); in brackets by process CPU time (less sensitive to "
          "other load); ratio: Quilt/PyTorch, the median of the alternating pairs' ratios, with "
          "their min-max")
    print(f"{'case':>22} {'input':>8} {'batch':>5} {'opt':>4} {'PyTorch samples/s':>20} "
          f"{'Quilt samples/s':>20} {'ratio':>12} {'min-max':>11}")
    for name, shape, batch, optimizer, py, qu, ratio in rows:
        dims = "x".join(map(str, shape))
        print(f"{name:>22} {dims:>8} {batch:>5} {optimizer:>4} {py[0]:>9.1f} ({py[1]:>8.1f}) "
              f"{qu[0]:>9.1f} ({qu[1]:>8.1f}) {ratio[0]:>5.2f} ({ratio[1]:.2f}) "
              f"{ratio[2]:.2f}-{ratio[3]:.2f}")

if __name__ == "__main__":
    main()
