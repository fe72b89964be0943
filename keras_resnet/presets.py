"""The architectures as data: stage depths, widths, block kind and the published numbers.

Pure data, no imports from the package: ``models.py`` reads it to build networks, tests and the
``summary`` command read it to compare against the papers.
"""

# ImageNet ResNets (He et al. 2015, Table 1; ResNet-200 from He et al. 2016).
IMAGENET_STAGES = {
    18: {"stage_depths": (2, 2, 2, 2), "bottleneck": False},
    34: {"stage_depths": (3, 4, 6, 3), "bottleneck": False},
    50: {"stage_depths": (3, 4, 6, 3), "bottleneck": True},
    101: {"stage_depths": (3, 4, 23, 3), "bottleneck": True},
    152: {"stage_depths": (3, 8, 36, 3), "bottleneck": True},
    200: {"stage_depths": (3, 24, 36, 3), "bottleneck": True},
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_INPUT_SHAPE = (224, 224, 3)

# CIFAR ResNets (He et al. 2015, section 4.2): 6n+2 layers with basic blocks, or 9n+2 with
# pre-activation bottlenecks (He et al. 2016: ResNet-164, ResNet-1001).
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_INPUT_SHAPE = (32, 32, 3)
CIFAR_CLASSES = 10

# Trainable parameters (1000 classes) of torchvision's resnet18 ... resnet152.
TORCHVISION_PARAMS = {
    18: 11_689_512,
    34: 21_797_672,
    50: 25_557_032,
    101: 44_549_160,
    152: 60_192_808,
}
# He et al. 2015, Table 1: FLOPs (multiply-adds) at 224x224, in billions.
PAPER_GIGA_MULTIPLY_ADDS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# He et al. 2015, Table 6: parameters of the CIFAR-10 ResNets (option A), in millions.
PAPER_CIFAR_MEGA_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
# He et al. 2016, Table 3: pre-activation bottleneck CIFAR ResNets, in millions.
PAPER_CIFAR_PREACT_MEGA_PARAMS = {164: 1.7, 1001: 10.2}

# keras.applications' published ImageNet weights (used by compat="keras.applications").
KERAS_APPLICATIONS_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
    "resnet{depth}_weights_tf_dim_ordering_tf_kernels{notop}.h5")

# Names accepted by ``keras_resnet.build`` and the CLI, mapped to (family, keyword arguments).
MODEL_PRESETS = {
    **{f"resnet{d}": ("imagenet", {"depth": d}) for d in IMAGENET_STAGES},
    **{f"preact-resnet{d}": ("imagenet", {"depth": d, "preact": True}) for d in IMAGENET_STAGES},
    **{f"plain{d}": ("imagenet", {"depth": d, "plain": True}) for d in (18, 34)},
    **{f"cifar-resnet{d}": ("cifar", {"depth": d}) for d in (20, 32, 44, 56, 110, 1202)},
    **{f"cifar-plain{d}": ("cifar", {"depth": d, "plain": True}) for d in (20, 32, 44, 56, 110)},
    **{f"cifar-preact-resnet{d}": ("cifar", {"depth": d, "preact": True, "bottleneck": True})
       for d in (164, 1001)},
}
