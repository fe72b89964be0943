"""The architectures as data: stage depths, widths, block kind and the published numbers.

Data plus the CIFAR depth arithmetic, no TensorFlow: ``models.py`` reads it to build networks,
the CLI, tuning and tests read it to name and check models and to compare against the papers.
"""

from keras_resnet import checks

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
# Layers per block of a CIFAR ResNet stage, and the family's depths as the message shows them.
CIFAR_LAYERS_PER_BLOCK = {False: 2, True: 3}
_CIFAR_FAMILIES = {False: "6n+2 (8, 14, 20, 32, 44, 56, 110, 1202, ...)",
                   True: "9n+2 (11, 20, ..., 164, 1001)"}


def cifar_blocks_per_stage(depth: int, bottleneck: bool = False) -> int:
    """The n of a CIFAR ResNet of ``depth`` layers: 6n+2 (basic blocks) or 9n+2 (bottlenecks).

    Three stages of n blocks, 2 (basic) or 3 (bottleneck) weighted layers each, plus the stem
    convolution and the classifier: ``depth = 3 * layers_per_block * n + 2``.

    Args:
        depth: the network's weighted layers (20, 32, 44, 56, 110, 1202; 164, 1001, ...).
        bottleneck: bottleneck blocks (9n+2) instead of basic ones (6n+2).

    Returns:
        n, the blocks per stage.

    Raises:
        TypeError: ``depth`` is not an int or ``bottleneck`` not a bool.
        ValueError: ``depth`` is not in the family.
    """
    checks.positive_int(depth, "depth")
    checks.boolean(bottleneck, "bottleneck")
    per_stage = 3 * CIFAR_LAYERS_PER_BLOCK[bottleneck]
    if depth < per_stage + 2 or (depth - 2) % per_stage:
        raise ValueError(f"depth must be {_CIFAR_FAMILIES[bottleneck]} for a CIFAR ResNet with "
                         f"bottleneck={bottleneck}; got {depth}")
    return (depth - 2) // per_stage


def cifar_depth(blocks_per_stage: int, bottleneck: bool = False) -> int:
    """The depth of a CIFAR ResNet with ``blocks_per_stage`` blocks per stage: 6n+2 or 9n+2.

    The inverse of :func:`cifar_blocks_per_stage`.

    Args:
        blocks_per_stage: n, the blocks of each of the three stages.
        bottleneck: bottleneck blocks (9n+2) instead of basic ones (6n+2).

    Returns:
        The network's weighted layers.

    Raises:
        TypeError: ``blocks_per_stage`` is not an int or ``bottleneck`` not a bool.
        ValueError: ``blocks_per_stage`` is below 1.
    """
    checks.positive_int(blocks_per_stage, "blocks_per_stage")
    checks.boolean(bottleneck, "bottleneck")
    return 3 * CIFAR_LAYERS_PER_BLOCK[bottleneck] * blocks_per_stage + 2


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
# Their MD5 digests (with the top, without), as keras.applications' resnet module lists them:
# keras.utils.get_file checks every download against them.
KERAS_APPLICATIONS_WEIGHTS_MD5 = {
    50: ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    101: ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    152: ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}

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

# Training recipes, named like the models: the ``TrainConfig`` values each one sets
# (``keras_resnet.training.recipe_options.resolve_recipe``); explicit options override them.
RECIPES = {
    # He et al. 2015, section 4.2 (CIFAR-10): the defaults of `train`.
    "cifar": {"epochs": 30, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
              "schedule": "step", "label_smoothing": 0.0},
    # ResNet-50 on ImageNet (Goyal et al. 2017; torchvision's reference recipe): batch 256 at
    # learning rate 0.1, scaled linearly with the batch (0.1 x batch / 256); 5 warm-up epochs,
    # then cosine over 90 epochs; weight decay 1e-4 on kernels only (not BN, not biases);
    # label smoothing 0.1; the last BN of every residual branch starts at zero; the Inception
    # random-resized crop.
    "imagenet": {"epochs": 90, "batch_size": 256, "learning_rate": 0.1,
                 "learning_rate_batch_size": 256, "momentum": 0.9, "weight_decay": 1e-4,
                 "schedule": "cosine", "warmup_epochs": 5, "label_smoothing": 0.1,
                 "model_options": {"zero_init_residual": True},
                 "data_options": {"crop": "inception"}},
}
# The same with the paper's step schedule (He et al. 2015 sec. 3.4 / Goyal et al. 2017): the
# rate divided by 10 at epochs 30, 60 and 80 of 90 (fractions of training, so a shorter run
# decays at the same thirds), after the same 5 linear warm-up epochs.
RECIPES["imagenet-step"] = {**RECIPES["imagenet"], "schedule": "step",
                            "step_boundaries": (30 / 90, 60 / 90, 80 / 90)}


def check_model_name(value: object, argument: str = "model") -> str:
    """Returns ``value`` if it is a key of ``MODEL_PRESETS`` (the CLI's and ``build``'s names).

    Args:
        value: the name to check.
        argument: its name in the caller's API.

    Returns:
        ``value``.

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: no preset has that name.
    """
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a model name (a str); got {value!r}")
    if value not in MODEL_PRESETS:
        raise ValueError(f"unknown model {value!r}; {argument} must be one of: "
                         f"{', '.join(MODEL_PRESETS)}")
    return value
