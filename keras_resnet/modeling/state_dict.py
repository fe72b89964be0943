"""Reading PyTorch-world ``state_dict`` files into NumPy arrays, without torch where possible.

``.safetensors`` files are read with ``safetensors.numpy`` (no torch needed); ``.pth`` / ``.pt``
/ ``.bin`` pickles need torch, an optional extra. Floating-point tensors come back as float32.
"""

from __future__ import annotations

import os

import numpy as np

from keras_resnet.constants import TORCH_CHECKPOINT_EXTENSIONS

SAFETENSORS_EXTENSIONS = TORCH_CHECKPOINT_EXTENSIONS[:1]
TORCH_EXTENSIONS = TORCH_CHECKPOINT_EXTENSIONS[1:]
# Containers that training scripts wrap a state_dict in (timm, torchvision references, Lightning).
_WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema")


def is_torch_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a PyTorch-world checkpoint by its extension."""
    return os.fspath(path).lower().endswith(SAFETENSORS_EXTENSIONS + TORCH_EXTENSIONS)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a torchvision / timm ``state_dict`` as NumPy arrays.

    Args:
        path: a ``.safetensors`` file, or a ``.pth`` / ``.pt`` / ``.bin`` pickle (needs torch).

    Returns:
        ``{key: array}``; floating-point tensors as float32, a ``module.`` prefix (from
        ``DistributedDataParallel``) removed.

    Raises:
        ValueError: for another extension, a missing or unreadable file.
        ImportError: for a ``.pth`` file when torch is not installed.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path; got {path!r}")
    path = os.fspath(path)
    lower = path.lower()
    if not lower.endswith(SAFETENSORS_EXTENSIONS + TORCH_EXTENSIONS):
        raise ValueError(f"checkpoint {path!r} must be a .safetensors file or a torch pickle "
                         f"({', '.join(TORCH_EXTENSIONS)})")
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist")
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        state = _read_safetensors(path)
    else:
        state = _read_torch_pickle(path)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise ValueError(f"checkpoint {path!r} is not a readable safetensors file: "
                         f"{error}") from error
    return {key: _float32(value) for key, value in state.items()}


def _read_torch_pickle(path):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path!r} needs PyTorch, which is not installed: install the optional "
            "extra (pip install -e '.[torch]' in this checkout, or pip install torch), or convert the "
            "checkpoint to .safetensors") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (UnpicklingError, RuntimeError, ...)
        raise ValueError(f"checkpoint {path!r} is not a readable torch file: {error}") from error
    for wrapper in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path!r} holds a {type(state).__name__}, not a state_dict")
    arrays = {}
    for key, tensor in state.items():
        if not hasattr(tensor, "detach"):
            raise ValueError(f"checkpoint {path!r}: key {key!r} is not a tensor")
        tensor = tensor.detach().cpu()
        arrays[key] = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
    return arrays


def _float32(value):
    return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
