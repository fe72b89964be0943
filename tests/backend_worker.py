"""Cross-backend checks of the modelling core, one Keras backend per process.

``tests/test_backends.py`` runs it in subprocesses; it also runs by hand where only JAX, PyTorch
and a Keras wheel are installed (a GPU machine), from the repository root::

    python tests/backend_worker.py reference --out ref.npz          # needs TensorFlow
    python tests/backend_worker.py check --reference ref.npz --backend torch [--save m.keras]
    python tests/backend_worker.py load --reference ref.npz --model m.keras   # on TensorFlow
    python tests/backend_worker.py no-tensorflow --backend jax

``reference`` builds every case on the TensorFlow backend, sets its weights from a seed (numpy,
so every backend draws the same values, keyed by the variable's path) and writes the inputs, the
TensorFlow outputs (inference mode), the parameter counts, the weights' paths and checksums and a
``.keras`` file saved on TensorFlow. ``check`` (TensorFlow blocked through ``sys.modules``, so a
hidden TensorFlow dependency fails it) rebuilds the cases on ``--backend`` and compares; it also
checks identity at initialization, looped vs unrolled stages, ``recompute_grad`` and
``compile_model`` + ``fit``. Each mode prints one JSON object; ``check`` and ``load`` exit 1 on a
mismatch, listing it under ``failures``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np

TOLERANCE = 1e-5
SEED = 17
BATCH = 2
# case -> (constructor, arguments, input shape); every case is compared output for output.
CASES = {
    "cifar_resnet20": ("CifarResNet", dict(depth=20), (32, 32, 3)),
    "cifar_preact_resnet20": ("CifarResNet", dict(depth=20, preact=True), (32, 32, 3)),
    "cifar_bottleneck_resnet29": ("CifarResNet", dict(depth=29, bottleneck=True), (32, 32, 3)),
    "cifar_preact_bottleneck_resnet29_looped": (
        "CifarResNet", dict(depth=29, bottleneck=True, preact=True, loop_stages=True),
        (32, 32, 3)),
    "resnet18": ("ResNet18", dict(classes=1000), (64, 64, 3)),
    "resnet50": ("ResNet50", dict(classes=1000), (64, 64, 3)),
}
QUICK_CASES = ("cifar_resnet20", "cifar_preact_resnet20", "cifar_bottleneck_resnet29",
               "cifar_preact_bottleneck_resnet29_looped")
SAVED_CASE = "cifar_resnet20"  # the case that travels as a .keras file between backends


def _setup(backend, block_tensorflow):
    """Picks the backend (before Keras is imported), blocks TensorFlow, full float32 math."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # GPUs would otherwise use TF32 convolutions (about 1e-3 apart from float32).
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
    if block_tensorflow:
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    import keras

    if keras.backend.backend() != backend:
        raise SystemExit(f"asked for the {backend!r} backend, Keras runs on "
                         f"{keras.backend.backend()!r}")
    if backend == "torch":
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return keras


def _fan_in(shape):
    # Conv kernels (k, k, in, out), stacked ones (count, k, k, in, out), Dense kernels (in, out).
    return int(np.prod(shape[-4:-1])) if len(shape) >= 4 else int(shape[0])


def set_seeded_weights(model, seed=SEED):
    """Gives every variable values drawn from ``seed`` and its path (the same on any backend);
    BN statistics and gammas are non-trivial so a misplaced BN would show."""
    for variable in model.weights:
        shape = tuple(variable.shape)
        rng = np.random.default_rng([seed, zlib.crc32(variable.path.encode())])
        name = variable.path.rsplit("/", 1)[-1]
        if name.endswith("kernel"):
            values = rng.normal(0.0, np.sqrt(1.0 / _fan_in(shape)), shape)
        elif name.endswith(("gamma", "moving_variance")):
            values = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "bias", "moving_mean")):
            values = rng.normal(0.0, 0.1, shape)
        else:
            raise ValueError(f"no seeded values for variable {variable.path!r}")
        variable.assign(values.astype(variable.dtype))


def build_case(keras, case):
    import keras_resnet

    constructor, kwargs, shape = CASES[case]
    keras.backend.clear_session()
    model = getattr(keras_resnet, constructor)(input_shape=shape, classifier_activation=None,
                                               **kwargs)
    set_seeded_weights(model)
    return model


def inputs(case):
    shape = CASES[case][2]
    return np.random.default_rng([SEED, len(case)]).uniform(0, 1, (BATCH,) + shape) \
        .astype("float32")


def predict(keras, model, x):
    return np.asarray(model.predict(x, batch_size=BATCH, verbose=0), "float64")


def checksum(model):
    return float(sum(np.abs(np.asarray(w, "float64")).sum() for w in model.get_weights()))


# ----------------------------------------------------------------------------- reference

def reference(args):
    keras = _setup("tensorflow", block_tensorflow=False)
    arrays, meta = {}, {"backend": "tensorflow", "keras": keras.__version__, "cases": {}}
    for case in args.cases:
        model = build_case(keras, case)
        x = inputs(case)
        arrays[f"{case}/x"], arrays[f"{case}/y"] = x, predict(keras, model, x)
        meta["cases"][case] = {"params": int(model.count_params()),
                               "paths": [w.path for w in model.weights],
                               "checksum": checksum(model)}
        if case == SAVED_CASE:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                model.save(path)
                with open(path, "rb") as f:
                    arrays["keras_file"] = np.frombuffer(f.read(), dtype="uint8")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype="uint8")
    np.savez(args.out, **arrays)
    print(json.dumps({"out": args.out, "params": {c: m["params"]
                                                  for c, m in meta["cases"].items()}}))
    return 0


def read_reference(path):
    data = np.load(path)
    meta = json.loads(data["meta"].tobytes().decode())
    return data, meta


# ----------------------------------------------------------------------------- check

def _compare_cases(keras, data, meta, cases, result, failures):
    """Every reference case: parameter count, variable paths, seeded weights; ``cases``: also
    the outputs."""
    for case in cases:
        if case not in meta["cases"]:
            failures.append(f"{case}: not in the reference")
    for case, ref in meta["cases"].items():
        model = build_case(keras, case)
        params = int(model.count_params())
        result["params"][case] = params
        if params != ref["params"]:
            failures.append(f"{case}: {params} parameters, TensorFlow has {ref['params']}")
        if [w.path for w in model.weights] != ref["paths"]:
            failures.append(f"{case}: the variables' paths differ from TensorFlow's")
        if not np.isclose(checksum(model), ref["checksum"], rtol=1e-9):
            failures.append(f"{case}: the seeded weights differ from TensorFlow's")
        if case not in cases:
            continue
        diff = float(np.abs(predict(keras, model, data[f"{case}/x"]) - data[f"{case}/y"]).max())
        result["max_abs_diff"][case] = diff
        if not diff <= TOLERANCE:
            failures.append(f"{case}: outputs differ from TensorFlow's by {diff:.3g}")


def _keras_file_from_tensorflow(keras, data, result, failures):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "from_tensorflow.keras")
        with open(path, "wb") as f:
            f.write(data["keras_file"].tobytes())
        model = keras.models.load_model(path)
    diff = float(np.abs(predict(keras, model, data[f"{SAVED_CASE}/x"])
                        - data[f"{SAVED_CASE}/y"]).max())
    result["keras_file_from_tensorflow_max_abs_diff"] = diff
    if not diff <= TOLERANCE:
        failures.append(f"the .keras file saved on TensorFlow gives outputs {diff:.3g} apart")


def _identity_at_init(keras, result, failures):
    """zero_init_residual=True: a block (and a looped stage) is the identity on x >= 0."""
    from keras_resnet import BlockOptions, residual_block
    from keras_resnet.modeling.looped_stages import RepeatedBlocks

    x = np.abs(np.random.default_rng(3).normal(size=(2, 8, 8, 16))).astype("float32")
    keras.utils.set_random_seed(0)
    errors, controls = {}, {}
    for bottleneck in (False, True):
        for preact in (False, True):
            label = f"{'bottleneck' if bottleneck else 'basic'}, " \
                    f"{'pre' if preact else 'post'}-activation"
            for zero, into in ((True, errors), (False, controls)):
                options = dict(bottleneck=bottleneck, preact=preact, zero_init_residual=zero)
                inp = keras.Input((8, 8, 16))
                block = keras.Model(inp, residual_block(inp, 4 if bottleneck else 16, 1,
                                                        name="b", **options))
                stage = RepeatedBlocks(3, 4 if bottleneck else 16, BlockOptions(**options))
                into[label] = max(
                    float(np.abs(keras.ops.convert_to_numpy(block(x, training=False)) - x).max()),
                    float(np.abs(keras.ops.convert_to_numpy(stage(x, training=False)) - x).max()))
    result["identity_max_abs_error"], result["without_zero_init_max_abs_error"] = errors, controls
    failures += [f"zero-init {k}: {v:.3g} from the identity" for k, v in errors.items()
                 if not v <= 1e-6]
    failures += [f"without zero-init {k}: only {v:.3g} from the identity (control)"
                 for k, v in controls.items() if not v > 0.1]


def _small_data():
    rng = np.random.default_rng(5)
    return (rng.uniform(0, 1, (32, 8, 8, 3)).astype("float32"),
            rng.integers(0, 4, (32,)).astype("int32"))


def _loop_and_recompute(keras, result, failures):
    """Looped stages (keras.ops.scan) == unrolled; recompute_grad gives the same training step."""
    from keras_resnet import CifarResNet, compile_model
    from keras_resnet.modeling.stage_conversion import transfer_weights

    x, y = _small_data()
    options = dict(depth=14, input_shape=(8, 8, 3), classes=4, bottleneck=False, preact=True)
    unrolled = CifarResNet(**options)
    set_seeded_weights(unrolled)
    # The recomputed model trains through keras.remat inside keras.ops.scan: its gradients
    # (and BN statistics) are the scan's, checked against the unrolled blocks'.
    looped = CifarResNet(loop_stages=True, recompute_grad=True, **options)
    transfer_weights(unrolled, looped)
    result["looped_vs_unrolled_max_abs_diff"] = float(np.abs(
        predict(keras, looped, x) - predict(keras, unrolled, x)).max())
    for model in (unrolled, looped):
        compile_model(model, learning_rate=0.1, weight_decay=0.0)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    result["recomputed_after_one_epoch_max_abs_diff"] = float(np.abs(
        predict(keras, looped, x) - predict(keras, unrolled, x)).max())
    if not result["looped_vs_unrolled_max_abs_diff"] <= TOLERANCE:
        failures.append("looped stages differ from the unrolled ones")
    if not result["recomputed_after_one_epoch_max_abs_diff"] <= 1e-4:
        failures.append("after one epoch the looped (recompute_grad) model differs from the "
                        "unrolled one by {:.3g}".format(
                            result["recomputed_after_one_epoch_max_abs_diff"]))


def _fit_lowers_loss(keras, result, failures):
    """compile_model + PaperSchedule + its callbacks: fit memorizes a small batch."""
    from keras_resnet import CifarResNet, PaperSchedule, PaperWarmup, compile_model
    from keras_resnet.modeling.recipe import LearningRateLogger

    x, y = _small_data()
    keras.utils.set_random_seed(0)
    model = CifarResNet(14, input_shape=(8, 8, 3), classes=4)
    schedule = PaperSchedule(0.1, total_steps=20, warmup_learning_rate=0.01)
    compile_model(model, learning_rate=schedule)
    history = model.fit(x, y, batch_size=16, epochs=10, verbose=0,
                        callbacks=[PaperWarmup(schedule), LearningRateLogger(schedule)])
    loss = history.history["loss"]
    result["fit"] = {"first_epoch_loss": loss[0], "last_epoch_loss": loss[-1],
                     "learning_rates": history.history["learning_rate"]}
    if not loss[-1] < 0.5 * loss[0]:
        failures.append(f"fit did not lower the loss: {loss[0]:.4f} -> {loss[-1]:.4f}")


def _fixture_dir(given):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in ([given] if given else
                 [os.path.join(root, "shared", "fixtures", "torchvision"),
                  os.path.join(root, os.pardir, "shared", "fixtures", "torchvision")]):
        if os.path.isfile(os.path.join(path, "tv_resnet18.safetensors")):
            return path
    if given:
        raise SystemExit(f"--fixtures {given!r} has no tv_resnet18.safetensors")
    return None


def _pretrained(keras, fixtures, result, failures):
    """torchvision checkpoints (.safetensors, no torch needed) give torchvision's logits."""
    from keras_resnet.modeling import from_torch_checkpoint

    result["pretrained_max_abs_diff"] = {}
    for stem in ("tv_resnet18", "tv_bottleneck_1111"):
        model = from_torch_checkpoint(os.path.join(fixtures, f"{stem}.safetensors"),
                                      input_shape=(64, 64, 3), classifier_activation=None)
        x = np.load(os.path.join(fixtures, f"{stem}_inputs_nchw.npy")).transpose(0, 2, 3, 1)
        expected = np.load(os.path.join(fixtures, f"{stem}_logits.npy"))
        diff = float(np.abs(predict(keras, model, x) - expected).max())
        result["pretrained_max_abs_diff"][stem] = diff
        if not diff < 1e-4:  # the fixtures' float16 weights: 1e-4 (their README)
            failures.append(f"{stem}: torchvision's logits {diff:.3g} apart")


def check(args):
    keras = _setup(args.backend, block_tensorflow=not args.allow_tensorflow)
    import keras_resnet  # noqa: F401  (the package import itself must not need TensorFlow)

    data, meta = read_reference(args.reference)
    result = {"backend": args.backend, "keras": keras.__version__, "params": {},
              "max_abs_diff": {}}
    failures = []
    cases = args.cases or list(meta["cases"])
    steps = [lambda: _compare_cases(keras, data, meta, cases, result, failures),
             lambda: _keras_file_from_tensorflow(keras, data, result, failures),
             lambda: _identity_at_init(keras, result, failures),
             lambda: _loop_and_recompute(keras, result, failures),
             lambda: _fit_lowers_loss(keras, result, failures)]
    fixtures = _fixture_dir(args.fixtures)
    if fixtures and importlib.util.find_spec("safetensors") is None:
        result["pretrained_skipped"] = "safetensors is not installed"
    elif fixtures:
        steps.append(lambda: _pretrained(keras, fixtures, result, failures))
    else:
        result["pretrained_skipped"] = "no torchvision fixtures (--fixtures)"
    result["seconds"] = []
    for step in steps:
        started = time.perf_counter()
        step()
        result["seconds"].append(round(time.perf_counter() - started, 1))
    if args.save:
        build_case(keras, SAVED_CASE).save(args.save)
        result["saved"] = args.save
    result["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    result["failures"], result["ok"] = failures, not failures
    print(json.dumps(result))
    return 0 if not failures else 1


# ----------------------------------------------------------------------------- load

def load(args):
    """On TensorFlow: a .keras file saved on another backend gives TensorFlow's outputs."""
    keras = _setup("tensorflow", block_tensorflow=False)
    import keras_resnet  # noqa: F401  (registers the custom layers)

    data, _ = read_reference(args.reference)
    model = keras.models.load_model(args.model)
    diff = float(np.abs(predict(keras, model, data[f"{SAVED_CASE}/x"])
                        - data[f"{SAVED_CASE}/y"]).max())
    failures = [] if diff <= TOLERANCE else [f"outputs {diff:.3g} apart"]
    print(json.dumps({"max_abs_diff": diff, "failures": failures, "ok": not failures}))
    return 0 if not failures else 1


# ----------------------------------------------------------------------------- no TensorFlow

TENSORFLOW_ONLY = ("keras_resnet.data", "keras_resnet.export", "keras_resnet.serving",
                   "keras_resnet.tuning", "keras_resnet.training", "keras_resnet.diagnostics")


def no_tensorflow(args):
    """What a user without TensorFlow sees: the error of each TensorFlow-only package and of
    the CLI, and the core still working (the fused BN falls back to Keras')."""
    keras = _setup(args.backend, block_tensorflow=True)
    import keras_resnet
    from keras_resnet import cli
    from keras_resnet.modeling.fused_batch_norm import FusedBatchNormalization

    result = {"errors": {}}
    for module in TENSORFLOW_ONLY:
        try:
            importlib.import_module(module)
            result["errors"][module] = None
        except ImportError as error:
            result["errors"][module] = [type(error).__name__, str(error)]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = cli.main(["tune", "--max-trials", "1"])
    result["cli"] = {"status": status, "stderr": stderr.getvalue()}
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    fused, plain = FusedBatchNormalization(), keras.layers.BatchNormalization()
    fused.build(x.shape)
    plain.build(x.shape)
    result["fused_bn_fallback_max_abs_diff"] = float(np.abs(
        keras.ops.convert_to_numpy(fused(x, training=True))
        - keras.ops.convert_to_numpy(plain(x, training=True))).max())
    result["cifar_resnet20_params"] = int(keras_resnet.CifarResNet(20).count_params())
    result["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    print(json.dumps(result))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    ref = modes.add_parser("reference", help="TensorFlow outputs and counts -> NPZ")
    ref.add_argument("--out", required=True)
    ref.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    chk = modes.add_parser("check", help="compare a backend with the reference")
    chk.add_argument("--reference", required=True)
    chk.add_argument("--backend", required=True, choices=("jax", "torch", "tensorflow"))
    chk.add_argument("--cases", nargs="*", default=None, choices=list(CASES),
                     help="compare the outputs of these (default: all); every case's parameter "
                          "count is compared")
    chk.add_argument("--save", default=None, help=f"save {SAVED_CASE} here as .keras")
    chk.add_argument("--fixtures", default=None,
                     help="the torchvision fixtures (default: shared/fixtures/torchvision in or "
                          "beside the checkout; skipped when absent)")
    chk.add_argument("--allow-tensorflow", action="store_true",
                     help="do not block TensorFlow (to check the TensorFlow backend itself)")
    lod = modes.add_parser("load", help="a .keras file from another backend, on TensorFlow")
    lod.add_argument("--reference", required=True)
    lod.add_argument("--model", required=True)
    ntf = modes.add_parser("no-tensorflow", help="the errors users without TensorFlow see")
    ntf.add_argument("--backend", required=True, choices=("jax", "torch"))
    args = parser.parse_args(argv)
    return {"reference": reference, "check": check, "load": load,
            "no-tensorflow": no_tensorflow}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
