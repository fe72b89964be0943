"""The torchvision peer: ResNet-50 steps in PyTorch, timed beside ours by ``bench.py``.

torchvision's ResNet-50 in float32 and in bfloat16 (``torch.autocast("cpu")``), NCHW and
channels-last, inference and an SGD training step. It runs only where both ``torch`` and
``torchvision`` import; ``unavailable()`` says why not otherwise.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

LAYOUTS = ("NCHW", "channels_last")


def unavailable():
    """``None`` where torch and torchvision import, else the reason as one line.

    Call this before anything imports TensorFlow: torchvision 0.29 imported after TensorFlow 2.21
    in one process crashes (a segmentation fault in the triton import that torch._dynamo makes,
    seen on x86_64); imported first, both work. Where
    TensorFlow came first the check imports them in a child process instead, so asking is safe.
    """
    missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        return (f"unavailable: No module named {missing[0]!r} (the torchvision peer needs torch "
                "and torchvision)")
    if "tensorflow" in sys.modules and "torch" not in sys.modules:
        child = subprocess.run([sys.executable, "-c", "import torch, torchvision"],
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            last = (child.stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]
            return f"unavailable: {last} (the torchvision peer needs torch and torchvision)"
        return None
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as error:  # a torchvision built for another torch
        return f"unavailable: {error} (the torchvision peer needs torch and torchvision)"
    return None


def step(precision, layout, batch, size, train):
    """A function of no arguments: one torchvision ResNet-50 inference call or SGD step.

    Args:
        precision: ``"float32"`` or ``"bfloat16"`` (autocast on the CPU).
        layout: ``"NCHW"`` or ``"channels_last"``.
        batch: images per call.
        size: image height and width.
        train: a training step (forward, backward, SGD with momentum) instead of inference.
    """
    if "torch" not in sys.modules and "tensorflow" in sys.modules:
        raise RuntimeError("import torch before TensorFlow (call torch_peer.unavailable() first): "
                           "torchvision imported after TensorFlow crashes the process")
    import torch
    import torchvision

    model = torchvision.models.resnet50()
    images = torch.rand(batch, 3, size, size)
    labels = torch.arange(batch) % 1000
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")

    if not train:
        model.eval()

        def infer():
            with torch.inference_mode(), autocast():
                model(images)
        return infer
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
    return train_step
