#!/usr/bin/python3
"""Writes vit_tiny.pt: a small torchvision VisionTransformer (image 64, patch 8, 4 layers, 4 heads,
hidden 128, MLP 256, 10 classes, random weights), scripted, for
experiments/examples/vit_tiny_skip.yaml, which cuts inside an encoder block so that the residual
stream crosses beside the block's current tensor (a skip across the cut; 65x128 tokens each).
Usage: /usr/bin/python3 make_vit_tiny.py [OUT]"""
import sys

import torch
from torchvision.models import VisionTransformer

out = sys.argv[1] if len(sys.argv) > 1 else "vit_tiny.pt"
torch.manual_seed(0)
model = VisionTransformer(image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=128,
                          mlp_dim=256, num_classes=10).eval()
torch.jit.save(torch.jit.script(model), out)
print("wrote", out)
