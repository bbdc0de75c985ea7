#!/usr/bin/python3
"""Writes TorchScript models of torchvision families that are not in the zoo (a CTest fixture).

Usage: /usr/bin/python3 make_torchscript_fixture.py OUT_DIR

Models (random weights, fixed seed, eval mode, no download), each as <name>.pt with
<name>_input.f32 (a batch of 2, raw little-endian float32) and <name>_output.f32 (the scripted
model's output on it):
  mobilenet_v3_small  torch.jit.script, input 3x32x32, 10 classes (inverted residuals: skips)
  vgg11               torch.jit.trace, input 3x32x32, a small classifier (512*7*7 -> 64 -> 10)
  vit                 torch.jit.script of a tiny VisionTransformer (image 32, patch 8, 2 layers,
                      2 heads, hidden 64, mlp 128): 3-D tensors (tokens x features) at the cuts
  mobilenet_v3_small_sd.pt   torch.save(state_dict) of another seed's mobilenet (model.weights)
  small_cnn           torch.jit.script of a small torchvision-style CNN for training (input
                      1x28x28, 10 classes): features (conv-BN-ReLU-pool x 2, 16x7x7 out) and a
                      classifier (flatten, dropout, linear 784 -> 32, ReLU, linear 32 -> 10)
  small_cnn_sd.pt     torch.save(state_dict) of another seed's small_cnn (model.weights)
Bad inputs:
  frozen_cnn.pt       small_cnn after torch.jit.freeze: no parameters left to train
  conv_head.pt        small_cnn's features alone: a [N, 16, 7, 7] output, not a classifier
  not_torchscript.pt  a state_dict file, not TorchScript
  tuple_output.pt     forward returns a tuple of two tensors
  loop.pt             a submodule called inside a loop of forward (cut "after_body")
  branch.pt           a submodule called inside an `if` of forward (cut "after_odd")
  two_inputs.pt       forward takes two tensors
"""
import os
import sys

import torch
import torchvision
from torch import nn


def write_f32(path, t):
    t.detach().contiguous().numpy().astype("<f4").tofile(path)


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        y = self.a(x)
        return y, self.b(y)


class HeadMiddleTail(nn.Module):
    """head 8 -> 8, a middle layer 8 -> 8 named `middle`, tail 8 -> 2 (registered in that order):
    the layers of the control-flow models, whose forward() says where the middle one runs."""

    def __init__(self, middle):
        super().__init__()
        self.head = nn.Linear(8, 8)
        setattr(self, middle, nn.Linear(8, 8))
        self.tail = nn.Linear(8, 2)


class Loop(HeadMiddleTail):
    def __init__(self):
        super().__init__("body")

    def forward(self, x):
        x = self.head(x)
        for _ in range(int(x.size(1)) // 4):
            x = self.body(x)
        return self.tail(x)


class Branch(HeadMiddleTail):
    def __init__(self):
        super().__init__("odd")

    def forward(self, x):
        x = self.head(x)
        if bool(x.sum() > 0):
            x = self.odd(x)
        return self.tail(x)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 2)

    def forward(self, x, y):
        return self.a(x) + self.a(y)


class SmallCnn(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(16 * 7 * 7, 32),
                                        nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def save(out, name, model, example, trace=False):
    model.eval()
    scripted = torch.jit.trace(model, example) if trace else torch.jit.script(model)
    torch.jit.save(scripted, os.path.join(out, name + ".pt"))
    with torch.no_grad():
        y = scripted(example)
    write_f32(os.path.join(out, name + "_input.f32"), example)
    write_f32(os.path.join(out, name + "_output.f32"), y)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    image = torch.randn(2, 3, 32, 32)
    save(out, "mobilenet_v3_small", torchvision.models.mobilenet_v3_small(num_classes=10), image)
    vgg = torchvision.models.vgg11(num_classes=10)
    vgg.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    save(out, "vgg11", vgg, image, trace=True)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=64, mlp_dim=128,
                                               num_classes=10)
    nn.init.normal_(vit.heads.head.weight, std=0.1)  # torchvision initialises it to zeros
    save(out, "vit", vit, image)
    torch.manual_seed(1)
    other = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    torch.save(other.state_dict(), os.path.join(out, "mobilenet_v3_small_sd.pt"))
    with torch.no_grad():
        write_f32(os.path.join(out, "mobilenet_v3_small_sd_output.f32"), other(image))

    torch.manual_seed(2)
    digit = torch.randn(2, 1, 28, 28)
    cnn = SmallCnn()
    save(out, "small_cnn", cnn, digit)
    torch.manual_seed(3)
    torch.save(SmallCnn().state_dict(), os.path.join(out, "small_cnn_sd.pt"))
    torch.jit.save(torch.jit.freeze(torch.jit.script(cnn.eval())),
                   os.path.join(out, "frozen_cnn.pt"))
    torch.jit.save(torch.jit.script(cnn.features.eval()), os.path.join(out, "conv_head.pt"))

    torch.save(nn.Linear(8, 2).state_dict(), os.path.join(out, "not_torchscript.pt"))
    for name, model in [("tuple_output", TupleOutput()), ("loop", Loop()), ("branch", Branch()),
                        ("two_inputs", TwoInputs())]:
        torch.jit.save(torch.jit.script(model.eval()), os.path.join(out, name + ".pt"))


if __name__ == "__main__":
    main()
