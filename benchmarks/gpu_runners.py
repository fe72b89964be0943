"""The measuring side of ``gpu.py``: one process runs one framework's configs for one mode/dtype.

Run by ``gpu.py`` as ``python gpu_runners.py TASK_JSON``; prints one ``RESULT {json}`` line per
config on stdout (the parent collects them, so a crash loses only the config that crashed). A
process per framework and (mode, dtype) keeps JAX and PyTorch apart: each gets the whole GPU
(no allocator holding on to the other's memory), its own CUDA libraries (jax and torch wheels
may pin different cuDNN builds) and no compile cache left over from the previous config.

Imports only what each config needs: jax + keras + ``keras_resnet.modeling.models`` for the Keras rows,
torch + torchvision for the PyTorch rows; never TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 1000
LEARNING_RATE = 0.01
MOMENTUM = 0.9


# ----------------------------------------------------------------------------- timing


def measure(step, sync, task):
    """Times ``step``: the first call (compile) and warm-up apart, then ``repeats`` x ``steps``.

    Args:
        step: runs one training or inference step (asynchronously on a GPU).
        sync: waits until every step launched so far has finished.
        task: the task dictionary (``steps``, ``repeats``, ``warmup``, ``batch_size``).

    Returns:
        A dictionary of seconds and the median images/s.
    """
    start = time.perf_counter()
    step()
    sync()
    compile_s = time.perf_counter() - start
    for _ in range(task["warmup"]):
        step()
    sync()
    warmup_s = time.perf_counter() - start
    seconds = []
    for _ in range(task["repeats"]):
        start = time.perf_counter()
        for _ in range(task["steps"]):
            step()
        sync()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    images = task["batch_size"] * task["steps"]
    return {"compile_s": round(compile_s, 3), "warmup_s": round(warmup_s, 3),
            "repeat_s": [round(s, 5) for s in seconds],
            "step_ms": round(1000 * median / task["steps"], 3),
            "images_per_s": round(images / median, 2),
            "images_per_s_best": round(images / min(seconds), 2)}


# ----------------------------------------------------------------------------- Keras on JAX


def _keras_setup(task):
    """Imports keras on JAX with the task's matmul precision; returns (jax, keras, models)."""
    import jax  # KERAS_BACKEND and JAX_PLATFORMS are set by main(), before any import

    # "tensorfloat32": float32 convolutions and matmuls may use TF32 tensor cores (XLA's
    # default on Ampere and later), the same as torch's allow_tf32; "float32": true float32.
    try:
        jax.config.update("jax_default_matmul_precision", task["jax_precision"])
    except ValueError as error:  # a JAX that renamed the value: say so in the row, keep going
        warnings.warn(f"jax_default_matmul_precision={task['jax_precision']!r}: {error}")
    import keras

    sys.path.insert(0, REPO)
    from keras_resnet.modeling import models  # only the models: no data pipeline, no TensorFlow

    return jax, keras, models


def _keras_model(keras, models, task):
    """A fresh model under the task's dtype policy (the policy applies at build time)."""
    keras.mixed_precision.set_dtype_policy(
        "mixed_bfloat16" if task["dtype"] == "bfloat16" else "float32")
    depth = int(task["model"].removeprefix("resnet"))
    model = getattr(models, f"ResNet{depth}")(
        weights=None, input_shape=(task["image_size"], task["image_size"], 3), classes=CLASSES,
        classifier_activation=None)  # logits, as torchvision's; the loss takes logits
    return model


def _keras_data(jax, task):
    key_x, key_y = jax.random.split(jax.random.key(0))
    size, batch = task["image_size"], task["batch_size"]
    x = jax.random.normal(key_x, (batch, size, size, 3), dtype="float32")
    y = jax.random.randint(key_y, (batch,), 0, CLASSES, dtype="int32")
    return jax.device_put(x), jax.device_put(y)


def keras_jax(task):
    """Keras' model as a stateless ``jax.jit`` step (``stateless_call`` + ``stateless_apply``).

    The fastest honest way to train a Keras model on JAX: the whole step (forward, loss,
    backward, SGD-momentum update, BN statistics) is one XLA program, its state donated and
    passed from step to step on the device, with no per-step host work; this is what Keras'
    own ``fit`` compiles too, minus the per-step variable sync and metric logs (``keras-fit``
    measures those).
    """
    jax, keras, models = _keras_setup(task)
    model = _keras_model(keras, models, task)
    x, y = _keras_data(jax, task)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    donate = () if jax.default_backend() == "cpu" else (0,)  # CPU cannot donate buffers
    if task["mode"] == "infer":
        infer = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        box = [None]

        def step():
            box[0] = infer(trainable, non_trainable, x)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM)
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def loss_and_state(tv, ntv, x, y):
            logits, ntv = model.stateless_call(tv, ntv, x, training=True)
            return loss_fn(y, logits), ntv

        grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

        def train_step(state, x, y):
            tv, ntv, ov = state
            (loss, ntv), grads = grad_fn(tv, ntv, x, y)
            tv, ov = optimizer.stateless_apply(ov, grads, tv)
            return (tv, ntv, ov), loss

        train = jax.jit(train_step, donate_argnums=donate)
        box = [(trainable, non_trainable, [v.value for v in optimizer.variables])]

        def step():
            box[0], _ = train(box[0], x, y)

    result = measure(step, lambda: jax.block_until_ready(box[0]), task)
    return {**result, **_keras_facts(jax, keras, model)}


def keras_fit(task):
    """Keras' own training path: ``compile(jit_compile=True)`` + ``train_on_batch``.

    ``train_on_batch`` returns the loss as a Python float, so every step waits for the device
    and writes the new state back into the Keras variables; ``predict_on_batch`` returns a
    NumPy array. The gap to ``keras-jax`` is Keras' per-step overhead.
    """
    jax, keras, models = _keras_setup(task)
    model = _keras_model(keras, models, task)
    x, y = _keras_data(jax, task)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    if task["mode"] == "infer":
        def step():
            model.predict_on_batch(x)
    else:
        def step():
            model.train_on_batch(x, y)
    result = measure(step, lambda: None, task)  # both return host values: already synced
    return {**result, **_keras_facts(jax, keras, model)}


def _keras_facts(jax, keras, model):
    device = jax.devices()[0]
    return {"device": f"{device.platform}:{getattr(device, 'device_kind', device)}",
            "trainable_params": sum(math.prod(v.shape) for v in model.trainable_variables),
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "versions": {"jax": jax.__version__, "keras": keras.__version__}}


# ----------------------------------------------------------------------------- PyTorch


def _torch_setup(task):
    import torch
    import torchvision

    cuda = task["device"] != "cpu" and torch.cuda.is_available()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = task["tf32"]
    torch.backends.cudnn.allow_tf32 = task["tf32"]
    torch.set_float32_matmul_precision("high" if task["tf32"] else "highest")
    return torch, torchvision, torch.device("cuda" if cuda else "cpu")


def torch_run(task, compiled):
    """torchvision's model, channels-last, eager or ``torch.compile``; bf16 by autocast."""
    torch, torchvision, device = _torch_setup(task)
    model = getattr(torchvision.models, task["model"])(weights=None, num_classes=CLASSES)
    model = model.to(device, memory_format=torch.channels_last)
    size, batch = task["image_size"], task["batch_size"]
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch,), device=device, generator=generator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=task["dtype"] == "bfloat16")
    if task["mode"] == "infer":
        model.eval()
        forward = torch.compile(model) if compiled else model

        def step():
            with torch.inference_mode(), autocast:
                forward(x)
    else:
        model.train()
        forward = torch.compile(model) if compiled else model
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            with autocast:
                loss = loss_fn(forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = measure(step, sync, task)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {**result, "device": f"{device.type}:{name}",
            "trainable_params": int(sum(p.numel() for p in model.parameters()
                                        if p.requires_grad)),
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                         "cuda": torch.version.cuda,
                         "cudnn": torch.backends.cudnn.version()}}


RUNNERS = {"keras-jax": keras_jax, "keras-fit": keras_fit,
           "torch-eager": lambda task: torch_run(task, compiled=False),
           "torch-compile": lambda task: torch_run(task, compiled=True)}
# The modules each config needs: missing ones make its rows "unavailable".
NEEDS = {"keras-jax": ("jax", "keras"), "keras-fit": ("jax", "keras"),
         "torch-eager": ("torch", "torchvision"), "torch-compile": ("torch", "torchvision")}


def _unavailable(config):
    """The import error that rules ``config`` out, or None."""
    import importlib

    for module in NEEDS[config]:
        try:
            importlib.import_module(module)
        except ImportError as error:  # includes sys.modules[name] = None
            return f"{module} cannot be imported ({error})"
    return None


def main(task_json):
    """Runs every config of one task; one ``RESULT`` line each, flushed as it is measured."""
    task = json.loads(task_json)
    os.environ["KERAS_BACKEND"] = "jax"  # before keras is first imported (by _unavailable)
    if task["device"] == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    warnings.filterwarnings("ignore", message=".*donat.*")
    for config in task["configs"]:
        row = {"config": config}
        if time.time() > task["deadline"]:
            row.update(status="skipped", reason="--budget-seconds exceeded")
        elif (reason := _unavailable(config)) is not None:
            row.update(status="unavailable", reason=reason)
        else:
            try:
                row.update(status="ok", **RUNNERS[config](task))
            except Exception as error:  # a failed config is a row, not the end of the run
                row.update(status="failed", reason=f"{type(error).__name__}: {error}"[:500])
        print("RESULT " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
