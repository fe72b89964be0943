"""What a torchvision / timm ResNet ``state_dict`` describes, read from its keys and shapes.

torchvision names a ResNet ``conv1``/``bn1`` (stem), ``layer{s}.{b}.conv{j}``/``bn{j}``
(stage ``s``, block ``b``) with ``downsample.0`` (1x1 conv) and ``downsample.1`` (BN)
projections, and ``fc``. timm uses the same names; its deep stem (ResNet-C) is
``conv1.0/1/3/4/6`` + ``bn1`` and its avg-down projection (ResNet-D) is ``downsample.1`` (conv)
+ ``downsample.2`` (BN) after an average pool at ``downsample.0``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

_STAGE_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")
# Our deep stem (models.py): 3x3 convolutions of width 32, 32, 64 (timm's stem_width=32).
DEEP_STEM_WIDTHS = (32, 32, 64)
IMAGENET_STEM_WIDTH = 64


@dataclasses.dataclass(frozen=True)
class TorchResNet:
    """The architecture of a torchvision / timm ResNet checkpoint.

    Attributes:
        stage_depths: blocks per stage (``layer1`` ... ``layerN``).
        widths: block width per stage (the first convolution's output channels).
        bottleneck: bottleneck blocks (``conv3`` present).
        expansion: bottleneck output channels / width (4; 2 for torchvision's wide ResNets).
        stem: ``"imagenet"`` (7x7 conv) or ``"deep"`` (timm's three 3x3 convs).
        shortcut: ``"auto"`` (torchvision's projections) or ``"D"`` (timm's avg-down).
        channels: input channels of the stem.
        classes: outputs of ``fc``; None for a checkpoint without one.
    """

    stage_depths: tuple[int, ...]
    widths: tuple[int, ...]
    bottleneck: bool
    expansion: int
    stem: str
    shortcut: str
    channels: int
    classes: int | None

    def resnet_options(self) -> dict:
        """Keyword arguments of ``keras_resnet.ResNet`` that rebuild this architecture."""
        return dict(stage_depths=self.stage_depths, widths=self.widths,
                    bottleneck=self.bottleneck, expansion=self.expansion, stem=self.stem,
                    shortcut=self.shortcut, stride_on="3x3", epsilon=1e-5, use_bias=False)


def _shape(state, key):
    value = state.get(key)
    return None if value is None else tuple(np.shape(value))


def _stem(state):
    if "conv1.0.weight" in state:
        shapes = [_shape(state, f"conv1.{i}.weight") for i in (0, 3, 6)]
        widths = tuple(s[0] if s else None for s in shapes)
        if widths != DEEP_STEM_WIDTHS or any(s is None or s[2:] != (3, 3) for s in shapes):
            raise ValueError(
                f"checkpoint has a deep stem with 3x3 convolutions of widths {widths} "
                f"(conv1.0/3/6.weight shapes {shapes}); keras_resnet's stem='deep' has widths "
                f"{DEEP_STEM_WIDTHS} (timm's stem_width=32)")
        return "deep", shapes[0][1]
    shape = _shape(state, "conv1.weight")
    if shape is None:
        some = ", ".join(sorted(state)[:5])
        raise ValueError("not a torchvision/timm ResNet state_dict: it has neither "
                         f"'conv1.weight' nor 'conv1.0.weight' (keys: {some}, ...)")
    if len(shape) != 4 or shape[0] != IMAGENET_STEM_WIDTH or shape[2:] != (7, 7):
        raise ValueError(f"checkpoint key 'conv1.weight' has shape {shape}; keras_resnet's "
                         f"imagenet stem (layer conv1_conv) is a 7x7 convolution with "
                         f"{IMAGENET_STEM_WIDTH} filters, i.e. ({IMAGENET_STEM_WIDTH}, C, 7, 7)")
    return "imagenet", shape[1]


def _stage_depths(state):
    depths = {}
    for key in state:
        match = _STAGE_KEY.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths:
        raise ValueError("not a torchvision/timm ResNet state_dict: no 'layer1.0....' keys")
    stages = sorted(depths)
    if stages != list(range(1, len(stages) + 1)):
        raise ValueError(f"checkpoint stages must be layer1 ... layerN without gaps; "
                         f"got {['layer%d' % s for s in stages]}")
    return tuple(depths[s] for s in stages)


def _block_shapes(state, stage_depths, bottleneck):
    widths, expansions = [], set()
    for s in range(1, len(stage_depths) + 1):
        conv1 = _shape(state, f"layer{s}.0.conv1.weight")
        conv2 = _shape(state, f"layer{s}.0.conv2.weight")
        if conv1 is None or conv2 is None:
            raise ValueError(f"checkpoint stage layer{s} has no 'layer{s}.0.conv1.weight' / "
                             f"'layer{s}.0.conv2.weight'")
        width = conv1[0]
        if conv2[1] != width:
            raise ValueError(
                f"checkpoint key 'layer{s}.0.conv2.weight' has shape {conv2}: a grouped "
                "convolution (ResNeXt), which keras_resnet's blocks do not build")
        if bottleneck:
            conv3 = _shape(state, f"layer{s}.0.conv3.weight")
            if conv3 is None or conv3[0] % width:
                raise ValueError(f"checkpoint key 'layer{s}.0.conv3.weight' has shape {conv3}; "
                                 f"a bottleneck of width {width} needs a multiple of {width}")
            expansions.add(conv3[0] // width)
        elif conv2[0] != width:
            raise ValueError(f"checkpoint key 'layer{s}.0.conv2.weight' has shape {conv2}; a "
                             f"basic block of width {width} needs {width} output channels")
        widths.append(width)
    if len(expansions) > 1:
        raise ValueError(f"checkpoint bottlenecks expand by different factors per stage "
                         f"{sorted(expansions)}; keras_resnet uses one expansion")
    return tuple(widths), expansions.pop() if expansions else 4


def infer_architecture(state: dict[str, np.ndarray]) -> TorchResNet:
    """Reads the architecture of a torchvision / timm ResNet from its ``state_dict``.

    Args:
        state: ``{key: array}`` as ``read_state_dict`` returns it.

    Returns:
        A ``TorchResNet``.

    Raises:
        ValueError: when the keys are not a ResNet's or describe a variant keras_resnet does not
            build (grouped convolutions, another stem width), naming the key.
    """
    stem, channels = _stem(state)
    stage_depths = _stage_depths(state)
    bottleneck = "layer1.0.conv3.weight" in state
    widths, expansion = _block_shapes(state, stage_depths, bottleneck)
    avg_down = any(re.match(r"^layer\d+\.\d+\.downsample\.2\.weight$", key) for key in state)
    fc = _shape(state, "fc.weight")
    return TorchResNet(stage_depths=stage_depths, widths=widths, bottleneck=bottleneck,
                       expansion=expansion, stem=stem, shortcut="D" if avg_down else "auto",
                       channels=channels, classes=None if fc is None else fc[0])
