#!/usr/bin/python3
"""Writes mobilenet_v3_small.pt (torchvision MobileNetV3-small, random weights, 1000 classes),
scripted, for experiments/examples/mobilenet_v3_small.yaml. Pass a state_dict file as model.weights
in the experiment for trained weights. Usage: /usr/bin/python3 make_mobilenet_v3_small.py [OUT]"""
import sys

import torch
import torchvision

out = sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v3_small.pt"
torch.manual_seed(0)
model = torchvision.models.mobilenet_v3_small().eval()
torch.jit.save(torch.jit.script(model), out)
print("wrote", out)
