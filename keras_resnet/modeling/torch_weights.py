"""Loading torchvision / timm ResNet checkpoints into keras_resnet models, key by key.

Every checkpoint key lands on exactly one weight of one layer (``layer2.0.conv1.weight`` ->
``conv3_block1_1_conv`` kernel, OIHW -> HWIO; ``fc.weight`` -> ``predictions`` kernel, (out, in)
-> (in, out); BN ``weight``/``bias``/``running_mean``/``running_var`` -> gamma, beta, moving mean
and variance). The whole plan is checked before any weight is assigned: an unused key, a layer
weight without a key or a shape mismatch is a ``ValueError`` naming both, never a partial load.
The one exception is the classifier: a model whose head has another number of classes (or none)
keeps its own head and the ``fc`` keys are reported as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import dataclasses
import logging
import os
import re

import keras
import numpy as np

from keras_resnet.modeling.torch_architecture import TorchResNet, infer_architecture
from keras_resnet.modeling.state_dict import read_state_dict
from keras_resnet.modeling.stats import leaf_layers

logger = logging.getLogger(__name__)

TORCH_EPSILON = 1e-5
HEAD_LAYER = "predictions"
HEAD_KEYS = ("fc.weight", "fc.bias")
_BLOCK_LAYER = re.compile(r"^conv(\d+)_block(\d+)_(\d+)_(conv|bn)$")
_DEEP_STEM = {"conv1_1_conv": "conv1.0", "conv1_1_bn": "conv1.1", "conv1_2_conv": "conv1.3",
              "conv1_2_bn": "conv1.4", "conv1_3_conv": "conv1.6", "conv1_3_bn": "bn1"}
_STEM = {"conv1_conv": "conv1", "conv1_bn": "bn1", HEAD_LAYER: "fc"}
_BN_WEIGHTS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
               ("running_var", "moving_variance"))


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What a weights file gave a model.

    Attributes:
        path: the file.
        format: ``"torch"`` (torchvision / timm state_dict) or ``"keras"``.
        loaded: checkpoint keys assigned to the model's weights (torch files).
        skipped: checkpoint keys deliberately not loaded (a head with another number of classes).
        architecture: what the torch checkpoint describes (None for Keras files).
    """

    path: str
    format: str
    loaded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    architecture: TorchResNet | None = None


def torch_prefix(layer_name: str, avg_down: bool = False) -> str | None:
    """The torchvision / timm key prefix of one of our layers, or None if it has none.

    Args:
        layer_name: a keras_resnet layer name (``conv3_block1_0_conv``, ``conv1_bn``, ...).
        avg_down: the projections follow timm's avg-down numbering (``downsample.1``/``.2``).

    Returns:
        The prefix (``layer2.0.downsample.0``, ``bn1``, ``fc``, ...) or None.
    """
    if layer_name in _STEM:
        return _STEM[layer_name]
    if layer_name in _DEEP_STEM:
        return _DEEP_STEM[layer_name]
    match = _BLOCK_LAYER.match(layer_name)
    if not match:
        return None
    stage, block, index, kind = int(match[1]), int(match[2]), int(match[3]), match[4]
    prefix = f"layer{stage - 1}.{block - 1}"
    if index == 0:
        position = (0 if kind == "conv" else 1) + (1 if avg_down else 0)
        return f"{prefix}.downsample.{position}"
    return f"{prefix}.{kind}{index}"


def _model_structure(layers):
    names = {layer.name for layer in layers}
    depths = {}
    for name in names:
        match = _BLOCK_LAYER.match(name)
        if match:
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block)
    return dict(stage_depths=tuple(depths[s] for s in sorted(depths)),
                bottleneck="conv2_block1_3_conv" in names,
                stem="deep" if "conv1_1_conv" in names else "imagenet",
                avg_down=any(name.endswith("_0_pool") for name in names))


def _check_structure(model, layers, architecture):
    """Names the first stage (or option) where the checkpoint and the model disagree."""
    ours = _model_structure(layers)
    theirs = architecture.stage_depths
    for s in range(max(len(theirs), len(ours["stage_depths"]))):
        have = theirs[s] if s < len(theirs) else 0
        want = ours["stage_depths"][s] if s < len(ours["stage_depths"]) else 0
        if have != want:
            raise ValueError(
                f"checkpoint stage layer{s + 1} has {have} blocks but model {model.name!r} "
                f"stage conv{s + 2} has {want} (checkpoint stage_depths {theirs}, model "
                f"{ours['stage_depths']})")
    for option, have, want in (("bottleneck", architecture.bottleneck, ours["bottleneck"]),
                               ("stem", architecture.stem, ours["stem"]),
                               ("shortcut", architecture.shortcut,
                                "D" if ours["avg_down"] else "auto")):
        if have != want:
            raise ValueError(f"checkpoint has {option}={have!r} but model {model.name!r} was "
                             f"built with {option}={want!r}")


def _check_layer_options(layer):
    """Options that load without a shape error but would compute something else."""
    if isinstance(layer, keras.layers.BatchNormalization) and \
            not np.isclose(layer.epsilon, TORCH_EPSILON, rtol=1e-6, atol=0):
        raise ValueError(f"layer {layer.name!r} has BatchNormalization epsilon {layer.epsilon}; "
                         f"torch checkpoints need epsilon={TORCH_EPSILON} (build with "
                         "epsilon=1e-5, not compat='keras.applications')")
    match = _BLOCK_LAYER.match(layer.name)
    if match and match[2] == "1" and match[3] in ("1", "2") and match[4] == "conv" and \
            int(match[1]) > 2 and layer.kernel_size == (1, 1) and layer.strides != (1, 1):
        raise ValueError(f"layer {layer.name!r} strides in the 1x1 convolution; torchvision and "
                         "timm bottlenecks stride in the 3x3: build with stride_on='3x3'")


def _weight_plan(layer, prefix):
    """[(checkpoint key, variable, converter)] for one layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{prefix}.{key}", getattr(layer, attribute), None)
                for key, attribute in _BN_WEIGHTS]
    if isinstance(layer, keras.layers.Conv2D):
        plan = [(f"{prefix}.weight", layer.kernel, lambda w: np.transpose(w, (2, 3, 1, 0)))]
    elif isinstance(layer, keras.layers.Dense):
        plan = [(f"{prefix}.weight", layer.kernel, np.transpose)]
    else:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has weights that no "
                         f"torch key maps onto")
    if layer.use_bias:
        plan.append((f"{prefix}.bias", layer.bias, None))
    return plan


def _head_fits(layers, state):
    head = next((layer for layer in layers if layer.name == HEAD_LAYER), None)
    fc = state.get("fc.weight")
    if head is None or fc is None:
        return False
    return head.kernel.shape[-1] == fc.shape[0]


def _plan(model, state):
    """Checks everything and returns (assignments, loaded keys, skipped keys, architecture)."""
    every_layer = list(leaf_layers(model))
    layers = [layer for layer in every_layer if layer.weights]
    architecture = infer_architecture(state)
    _check_structure(model, every_layer, architecture)
    avg_down = architecture.shortcut == "D"
    load_head = _head_fits(layers, state)
    skipped = [] if load_head else [key for key in HEAD_KEYS if key in state]
    assignments, used = [], set(skipped)
    for layer in layers:
        prefix = torch_prefix(layer.name, avg_down)
        if prefix is None:
            raise ValueError(f"layer {layer.name!r} of model {model.name!r} has no torchvision/"
                             "timm counterpart (a pre-activation or plain model?)")
        if prefix == "fc" and not load_head:
            continue
        _check_layer_options(layer)
        for key, variable, convert in _weight_plan(layer, prefix):
            label = f"layer {layer.name!r} weight {variable.name!r}"
            if key not in state:
                raise ValueError(f"{label} has no checkpoint key {key!r}")
            value = state[key]
            if convert is not None and value.ndim == len(variable.shape):
                value = convert(value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"checkpoint key {key!r} of shape {tuple(state[key].shape)} "
                                 f"does not fit {label} of shape {tuple(variable.shape)}")
            assignments.append((variable, value))
            used.add(key)
        tracked = f"{prefix}.num_batches_tracked"
        if isinstance(layer, keras.layers.BatchNormalization) and tracked in state:
            used.add(tracked)
    unused = sorted(set(state) - used)
    if unused:
        shown = ", ".join(repr(key) for key in unused[:5])
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        raise ValueError(f"checkpoint keys {shown}{more} match no layer of model {model.name!r}")
    loaded = tuple(key for key in state if key in used and key not in skipped)
    return assignments, loaded, tuple(skipped), architecture


def describe_load(loaded: Sequence[str], skipped: Sequence[str], weights: int,
                  model_name: str) -> str:
    """One wording for what a load did, used by the log and ``keras-resnet convert``: the
    checkpoint's tensors (every key, ``num_batches_tracked`` included), those loaded, and the
    model weights they filled (``num_batches_tracked`` fills none)."""
    total = len(loaded) + len(skipped)
    return (f"loaded {len(loaded)} of the checkpoint's {total} tensors into {weights} weights "
            f"of model {model_name!r} (num_batches_tracked counters have no Keras weight)")


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray],
                    path: str = "<state_dict>") -> LoadResult:
    """Loads a torchvision / timm ``state_dict`` (NumPy arrays) into ``model``.

    Args:
        model: a keras_resnet ResNet built with the checkpoint's architecture (post-activation,
            ``stride_on="3x3"``, ``epsilon=1e-5``).
        state: ``{key: array}``.
        path: the file it came from, for messages.

    Returns:
        A ``LoadResult``; ``skipped`` lists the ``fc`` keys when the model's head differs.

    Raises:
        ValueError: for an unused key, a weight without a key, a shape mismatch or a
            checkpoint of another architecture; nothing is assigned then.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {model!r}")
    assignments, loaded, skipped, architecture = _plan(model, state)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    if not skipped and not any(key in HEAD_KEYS for key in loaded) and \
            any(layer.name == HEAD_LAYER for layer in leaf_layers(model)):
        logger.info("%s: the checkpoint has no fc; the head of model %r keeps its initial "
                    "weights", path, model.name)
    if skipped:
        logger.info("%s: model %r keeps its own head; skipped %s (the checkpoint's classifier has "
                    "another number of classes)", path, model.name, ", ".join(skipped))
    logger.info("%s: %s", path, describe_load(loaded, skipped, len(assignments), model.name))
    return LoadResult(path=path, format="torch", loaded=loaded, skipped=skipped,
                      architecture=architecture)


def load_torch_weights(model: keras.Model, path: str | os.PathLike) -> LoadResult:
    """Loads a torchvision / timm ResNet checkpoint file into a model you built.

    Args:
        model: the matching keras_resnet model (``from_torch_checkpoint`` builds one for you).
        path: a ``.safetensors`` file, or ``.pth`` / ``.pt`` / ``.bin`` (needs torch).

    Returns:
        A ``LoadResult`` listing loaded and skipped keys.

    Raises:
        ValueError: for a bad file or a checkpoint that does not fit the model (see
            ``load_state_dict``).
        ImportError: for a torch pickle without torch installed.
    """
    return load_state_dict(model, read_state_dict(path), os.fspath(path))
