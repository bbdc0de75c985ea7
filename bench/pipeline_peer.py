#!/usr/bin/python3
"""The peer of Quilt's quickstart pipeline: the same 2-rank ResNet-50 pipeline written the way an
expert would in plain PyTorch + mpi4py, to measure Quilt's end-to-end throughput against.

ResNet-50 (torchvision, random weights) cut after layer3: rank 0 runs stem..layer3 [+ encoder],
rank 1 runs [decoder +] layer4 + avgpool + fc. The autoencoder for R > 1 is a 1x1 Conv2d
1024 -> ceil(1024 / R) and back, with bias (as Quilt's). Each stage is scripted, frozen and passed
through torch.jit.optimize_for_inference in float32 at one thread per rank (checked against eager
before timing). Rank 0 sends each batch's output with a non-blocking send from the tensor's own
memory (at most two in flight); rank 1 receives into two alternating buffers, the next receive
posted before it computes. Throughput is measured as Quilt measures it: at the last rank,
(batches - 1) * batch / (end of the last measured batch - end of the first).

    mpirun -n 2 /usr/bin/python3 bench/pipeline_peer.py --rate 64 --batches 20

Prints one JSON line on rank 1: {"rate", "batch", "batches", "throughput_sps", ...}.
"""

import os

# One thread per rank, before torch is imported (OpenMP and OpenBLAS read these at load).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from mpi4py import MPI  # noqa: E402

CUT_CHANNELS = 1024  # ResNet-50 after layer3: 1024 x 14 x 14
DATA_TAG = 1


def stages(rate):
    """Stage 0 and stage 1 of ResNet-50 cut after layer3, with the autoencoder for `rate`."""
    torch.manual_seed(0)
    m = torchvision.models.resnet50().eval()
    enc, dec = [], []
    if rate > 1:
        code = math.ceil(CUT_CHANNELS / rate)
        enc = [torch.nn.Conv2d(CUT_CHANNELS, code, 1, bias=True)]
        dec = [torch.nn.Conv2d(code, CUT_CHANNELS, 1, bias=True)]
    s0 = torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3,
                             *enc)
    s1 = torch.nn.Sequential(*dec, m.layer4, m.avgpool, torch.nn.Flatten(1), m.fc)
    return s0.eval(), s1.eval()


def optimized(stage, x):
    """torch.jit.optimize_for_inference of `stage`, checked against eager on `x`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ofi = torch.jit.optimize_for_inference(torch.jit.script(stage))
    ref = stage(x)
    for _ in range(3):  # JIT profiling runs and oneDNN kernel generation
        out = ofi(x)
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    if err > 1e-4:
        sys.exit(f"optimize_for_inference changed the stage's result: relative error {err}")
    return ofi


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=1, help="autoencoder reduction rate R (1 = none)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="batches before measuring")
    ap.add_argument("--batches", type=int, default=8, help="measured batches (>= 2)")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    me = comm.Get_rank()
    if comm.Get_size() != 2:
        sys.exit("run with mpirun -n 2")
    if args.batches < 2:
        sys.exit("--batches must be >= 2")
    torch.set_num_threads(1)
    torch.manual_seed(1)

    with torch.no_grad():
        s0, s1 = stages(args.rate)
        x0 = torch.randn(args.batch, 3, 224, 224)
        x1 = s0(x0)  # both ranks build stage 0's output shape the same way
        stage = optimized(s0, x0) if me == 0 else optimized(s1, x1)
        comm.Barrier()

        total = args.warmup + args.batches
        ends = []
        if me == 0:
            sends = []  # (request, tensor): the tensor lives until its send completes
            for _ in range(total):
                y = stage(x0).contiguous()
                while len(sends) >= 2:
                    sends.pop(0)[0].Wait()
                sends.append((comm.Isend(y.numpy(), dest=1, tag=DATA_TAG), y))
            for req, _ in sends:
                req.Wait()
        else:
            bufs = [np.empty(tuple(x1.shape), dtype=np.float32) for _ in range(2)]
            reqs = [comm.Irecv(bufs[0], source=0, tag=DATA_TAG), None]
            for i in range(total):
                reqs[i % 2].Wait()
                if i + 1 < total:
                    reqs[(i + 1) % 2] = comm.Irecv(bufs[(i + 1) % 2], source=0, tag=DATA_TAG)
                out = stage(torch.from_numpy(bufs[i % 2]))
                if i >= args.warmup:
                    ends.append(time.perf_counter())
            del out
            nb = args.batches
            tput = (nb - 1) * args.batch / (ends[-1] - ends[0])
            print(json.dumps({"peer": "mpi4py + torch.jit.optimize_for_inference",
                              "torch": torch.__version__, "rate": args.rate,
                              "batch": args.batch, "batches": nb, "warmup": args.warmup,
                              "throughput_sps": tput}), flush=True)


if __name__ == "__main__":
    main()
