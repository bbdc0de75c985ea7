#!/usr/bin/python3
"""Writes the reference data the C++ models tests compare against (a CTest fixture).

Usage: /usr/bin/python3 make_torchvision_fixture.py OUT_DIR

For resnet18 and resnet50 (torchvision, random weights with a fixed seed, no download):
  <arch>_od.pt        torch.save(model.state_dict(), path): an OrderedDict with _metadata
  <arch>_dict.pt      torch.save(dict(model.state_dict()), path)        (resnet18 only)
  <arch>_legacy.pt    the legacy (non-zip) format                        (resnet18 only)
  <arch>_input.f32    the input batch, raw little-endian float32
  <arch>_logits.f32   torchvision's logits in eval mode, raw float32
  <arch>_params.txt   named_parameters() as "name shape" lines, in order
  <arch>_buffers.txt  named_buffers() likewise
BatchNorm running statistics are calibrated on random data, then perturbed, and weight/bias are
randomised, so eval-mode BatchNorm is exercised with non-trivial values.

For efficientnet_b0 (torchvision, batch 1 at 3x224x224) and unet (the milesial/Pytorch-UNet
layout defined below, bilinear=False, 3 -> 2 classes, batch 2 at 3x32x32): the same
<arch>_od.pt, _input.f32, _logits.f32 (unet: per-pixel logits 2x2x32x32), _params.txt,
_buffers.txt.

For an MLP 4 -> 8 -> 8 -> 3 with layers fc1/fc2/fc3, files to test load_state_dict's errors:
  mlp_od.pt, mlp_protocol4.pt, mlp_missing.pt (no fc3.bias), mlp_unexpected.pt (extra key),
  mlp_shape.pt (fc2.weight 8x9), mlp_checkpoint.pt ({'model': state_dict, 'epoch': 3}),
  mlp_input.f32, mlp_logits.f32.

For a {conv1: Conv2d(2, 3, 1), bn1: BatchNorm2d(3)} module, BatchNorm version handling:
  bn_full.pt (num_batches_tracked 5, running_mean 1 2 3), bn_v2_missing.pt (no
  num_batches_tracked, _metadata version 2), bn_v1_missing.pt (same, version 1),
  bn_dict_missing.pt (same, plain dict without _metadata).

The files are rewritten only when this script or the torch version changed (stamp file).
"""
import collections
import hashlib
import os
import sys

import numpy as np
import torch
import torchvision

BATCH = {"resnet18": 2, "resnet50": 1}


def shape_text(t):
    return "x".join(str(d) for d in t.shape) if t.dim() else "scalar"


def randomise_batchnorm(model, generator, input_shape=(3, 224, 224)):
    # Calibrate running stats on random data (momentum None = cumulative average), then
    # perturb them and the affine parameters so that eval-mode BN is far from identity.
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(2, *input_shape, generator=generator))
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            bn.running_mean.add_(0.1 * torch.randn(c, generator=generator))
            bn.running_var.mul_(0.5 + torch.rand(c, generator=generator))
            bn.weight.copy_(0.5 + torch.rand(c, generator=generator))
            bn.bias.copy_(0.1 * torch.randn(c, generator=generator))
            bn.num_batches_tracked.fill_(7)
            bn.momentum = 0.1
    model.eval()


def write_names(path, named):
    with open(path, "w") as f:
        for name, t in named:
            f.write(f"{name} {shape_text(t)}\n")


def make_resnet(arch, out, generator):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    randomise_batchnorm(model, generator)
    x = torch.randn(BATCH[arch], 3, 224, 224, generator=generator)
    with torch.no_grad():
        logits = model(x)
    sd = model.state_dict()
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")
    torch.save(sd, os.path.join(out, f"{arch}_od.pt"))
    if arch == "resnet18":
        torch.save(dict(sd), os.path.join(out, f"{arch}_dict.pt"))
        torch.save(sd, os.path.join(out, f"{arch}_legacy.pt"), _use_new_zipfile_serialization=False)
    x.numpy().astype("<f4").tofile(os.path.join(out, f"{arch}_input.f32"))
    logits.numpy().astype("<f4").tofile(os.path.join(out, f"{arch}_logits.f32"))
    write_names(os.path.join(out, f"{arch}_params.txt"), model.named_parameters())
    write_names(os.path.join(out, f"{arch}_buffers.txt"), model.named_buffers())


def save_reference(model, arch, x, out):
    with torch.no_grad():
        logits = model(x)
    torch.save(model.state_dict(), os.path.join(out, f"{arch}_od.pt"))
    x.numpy().astype("<f4").tofile(os.path.join(out, f"{arch}_input.f32"))
    logits.numpy().astype("<f4").tofile(os.path.join(out, f"{arch}_logits.f32"))
    write_names(os.path.join(out, f"{arch}_params.txt"), model.named_parameters())
    write_names(os.path.join(out, f"{arch}_buffers.txt"), model.named_buffers())


def make_efficientnet(out, generator):
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(weights=None)
    assert sum(p.numel() for p in model.parameters()) == 5288548
    randomise_batchnorm(model, generator)
    save_reference(model, "efficientnet_b0", torch.randn(1, 3, 224, 224, generator=generator), out)


# milesial/Pytorch-UNet (unet/unet_parts.py, unet/unet_model.py) with bilinear=False.
class DoubleConv(torch.nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.double_conv = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            torch.nn.BatchNorm2d(out_channels),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            torch.nn.BatchNorm2d(out_channels),
            torch.nn.ReLU(inplace=True))

    def forward(self, x):
        return self.double_conv(x)


class Down(torch.nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.maxpool_conv = torch.nn.Sequential(torch.nn.MaxPool2d(2),
                                                DoubleConv(in_channels, out_channels))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(torch.nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(torch.nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(torch.nn.Module):
    def __init__(self, n_channels, n_classes):
        super().__init__()
        self.inc = DoubleConv(n_channels, 64)
        self.down1 = Down(64, 128)
        self.down2 = Down(128, 256)
        self.down3 = Down(256, 512)
        self.down4 = Down(512, 1024)
        self.up1 = Up(1024, 512)
        self.up2 = Up(512, 256)
        self.up3 = Up(256, 128)
        self.up4 = Up(128, 64)
        self.outc = OutConv(64, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.outc(x)


def make_unet(out, generator):
    torch.manual_seed(0)
    model = UNet(3, 2)
    assert sum(p.numel() for p in model.parameters()) == 31037698
    randomise_batchnorm(model, generator, (3, 32, 32))
    save_reference(model, "unet", torch.randn(2, 3, 32, 32, generator=generator), out)


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 8)
        self.fc3 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def make_mlp(out, generator):
    torch.manual_seed(1)
    model = Mlp().eval()
    sd = model.state_dict()
    torch.save(sd, os.path.join(out, "mlp_od.pt"))
    torch.save(sd, os.path.join(out, "mlp_protocol4.pt"), pickle_protocol=4)
    missing = collections.OrderedDict(sd)
    del missing["fc3.bias"]
    torch.save(missing, os.path.join(out, "mlp_missing.pt"))
    unexpected = collections.OrderedDict(sd)
    unexpected["fc4.weight"] = torch.zeros(2, 2)
    torch.save(unexpected, os.path.join(out, "mlp_unexpected.pt"))
    shape = collections.OrderedDict(sd)
    shape["fc2.weight"] = torch.zeros(8, 9)
    torch.save(shape, os.path.join(out, "mlp_shape.pt"))
    torch.save({"model": sd, "epoch": 3}, os.path.join(out, "mlp_checkpoint.pt"))
    x = torch.randn(5, 4, generator=generator)
    with torch.no_grad():
        logits = model(x)
    x.numpy().astype("<f4").tofile(os.path.join(out, "mlp_input.f32"))
    logits.numpy().astype("<f4").tofile(os.path.join(out, "mlp_logits.f32"))


class ConvBn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 3, 1)
        self.bn1 = torch.nn.BatchNorm2d(3)


def make_batchnorm(out):
    torch.manual_seed(2)
    model = ConvBn()
    with torch.no_grad():
        model.bn1.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        model.bn1.num_batches_tracked.fill_(5)
    torch.save(model.state_dict(), os.path.join(out, "bn_full.pt"))
    sd = model.state_dict()
    del sd["bn1.num_batches_tracked"]
    assert sd._metadata["bn1"]["version"] == 2
    torch.save(sd, os.path.join(out, "bn_v2_missing.pt"))
    torch.save(dict(sd), os.path.join(out, "bn_dict_missing.pt"))
    sd._metadata["bn1"]["version"] = 1
    torch.save(sd, os.path.join(out, "bn_v1_missing.pt"))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with open(__file__, "rb") as f:
        stamp = hashlib.sha256(f.read()).hexdigest() + " torch " + torch.__version__ + \
            " torchvision " + torchvision.__version__
    stamp_path = os.path.join(out, "stamp.txt")
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print(f"fixture in {out} is up to date")
        return
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    generator = torch.Generator().manual_seed(1234)
    make_mlp(out, generator)
    make_batchnorm(out)
    for arch in ("resnet18", "resnet50"):
        make_resnet(arch, out, generator)
    make_efficientnet(out, generator)
    make_unet(out, generator)
    with open(stamp_path, "w") as f:
        f.write(stamp)
    print(f"wrote fixture to {out}")


if __name__ == "__main__":
    main()
