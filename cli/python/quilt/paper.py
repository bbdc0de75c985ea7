"""The QuiltNet paper's numbers (Park et al., DAC 2022), in one place for every analysis script.
Accuracies in percent, differences in percentage points (pt), gains in percent."""

LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "unet": "UNet",
          "efficientnet_b0": "EfficientNet-B0", "mlp": "MLP 512-512"}

# Fig. 2: MLP 512-512 with a 512x autoencoder vs baseline, mean accuracy difference over four
# data sets (instrumented - baseline), points.
FIG2_MEAN_DIFF_PT = -0.05

# Fig. 4: accuracy loss at R=64 for ResNet-50 (points) and autoencoder-only training speed-up.
FIG4_LOSS_AT_64_PT = 0.4
FIG4_PROXY_SPEEDUP = 76.9
# §4.2: normalized performance at R=64 on two Alveo boards ("1.2x and up").
FIG4_NORM_PERF_AT_64 = 1.2

# Fig. 5 (§4.3, two Alveo U200 boards over PCIe 3.0): (model, R) -> (throughput gain %,
# energy-efficiency gain %).
FIG5 = {
    ("resnet50", 64.0): (20.8, 19.2),
    ("unet", 7.5): (30.5, 28.4),
    ("unet", 120.0): (34.9, 32.9),
    ("efficientnet_b0", 8.0): (21.4, 17.5),
}

# §3.4: the balance objective "automatically identifies the layer to place the autoencoders,
# e.g., between stage 3 and 4 for ResNet50" (two boards, decided before R: at R=1).
SEC34_CUT = ("resnet50", "after_layer3")

# Fig. 6 (§4.3): the rate Quilt chose per model, and the autoencoder's share of compute (< 0.4%).
FIG6_RATE = {"resnet50": 64.0, "unet": 7.5, "efficientnet_b0": 8.0}
FIG6_AE_OVERHEAD_PCT = 0.4

# Table 1: ResNet-50 from scratch on ImageNet, R=64 after stage 3: (top-1 error, top-5 error) %.
TABLE1 = {"baseline": (23.85, 7.13), "quilt": (25.54, 8.10)}
TABLE1_DELTA_TOP1_PT = 1.69   # top-1 error added by the autoencoder
TABLE1_DELTA_TOP5_PT = 0.97

# Table 2: retraining a pretrained model with an autoencoder: (without, with) weight freezing,
# top-1 %.
TABLE2 = {"resnet50": ("ResNet50-Quilt 64x", 95.22, 95.62),
          "unet": ("UNet-Quilt 120x", 88.55, 92.66),
          "efficientnet_b0": ("EfficientNet-Quilt 64x", 88.59, 90.52)}
TABLE2_GAIN_RANGE_PT = (0.4, 4.1)

# Table 3: ResNet-50 on CIFAR-10, R=64 autoencoder placement: top-1 % and normalized performance.
CUTS_1 = ("after_layer1",)
CUTS_2 = ("after_layer2",)
CUTS_3 = ("after_layer3",)
CUTS_ALL = ("after_layer1", "after_layer2", "after_layer3")
TABLE3_TOP1 = {(): 96.05, CUTS_1: 95.91, CUTS_2: 95.62, CUTS_3: 95.58, CUTS_ALL: 95.46}
TABLE3_NORM_PERF = {CUTS_1: 1.22, CUTS_2: 1.26, CUTS_3: 1.31, CUTS_ALL: 1.44}
TABLE3_ROWS = [("Between stage 1 & 2", CUTS_1), ("Between stage 2 & 3", CUTS_2),
               ("Between stage 3 & 4", CUTS_3), ("Multi-AE", CUTS_ALL)]
