#!/usr/bin/python3
"""Writes vgg11.pt (torchvision VGG-11 with batch norm, random weights, 1000 classes), traced on a
3x224x224 batch, for experiments/examples/vgg11.yaml.
Usage: /usr/bin/python3 make_vgg11.py [OUT]"""
import sys

import torch
import torchvision

out = sys.argv[1] if len(sys.argv) > 1 else "vgg11.pt"
torch.manual_seed(0)
model = torchvision.models.vgg11_bn().eval()
torch.jit.save(torch.jit.trace(model, torch.randn(1, 3, 224, 224)), out)
print("wrote", out)
