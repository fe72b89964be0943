"""The modelling core on every Keras backend: TensorFlow-free JAX (and PyTorch) against the
TensorFlow backend, and the one error a TensorFlow-only feature gives without TensorFlow.

The backends run in subprocesses of ``tests/backend_worker.py`` (a Keras backend is chosen once
per process); the worker blocks ``import tensorflow`` where TensorFlow must not be needed, so a
hidden TensorFlow dependency fails these tests. PyTorch is checked the same way where it is
installed (``backend_worker.py check --backend torch``; CI installs JAX only).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from keras_resnet import _tensorflow

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend_worker.py")
REPO_ROOT = os.path.dirname(os.path.dirname(WORKER))
# torchvision checkpoints, as tests/test_pretrained.py finds them (shared/ beside the repo)
FIXTURES = os.path.join(REPO_ROOT, os.pardir, "shared", "fixtures", "torchvision")
HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax is not installed (pip install "
                                                   "'keras_resnet[jax]')")
# The outputs compared in CI (every case's parameter count is compared; ResNet-50's outputs
# are compared by `backend_worker.py check` without --cases).
CI_CASES = ["cifar_resnet20", "cifar_preact_resnet20", "cifar_bottleneck_resnet29",
            "cifar_preact_bottleneck_resnet29_looped", "resnet18"]
EXPECTED_PARAMS = {  # count_params(): weights and BN statistics, 1000 classes for ImageNet
    "cifar_resnet20": 271_098, "cifar_preact_resnet20": 271_098,
    "cifar_bottleneck_resnet29": 318_074, "cifar_preact_bottleneck_resnet29_looped": 316_282,
    "resnet18": 11_699_112, "resnet50": 25_610_152}
MESSAGE = "needs TensorFlow, but 'tensorflow' is not installed; install it with: " \
          "pip install 'keras_resnet[tensorflow]'"


def _worker(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)  # the worker sets it per mode
    result = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True,
                            timeout=timeout, env=env)
    lines = result.stdout.strip().splitlines()
    assert lines, f"worker {args[0]} printed nothing (exit {result.returncode}):\n" \
                  f"{result.stderr[-3000:]}"
    return result.returncode, json.loads(lines[-1]), result.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("backends") / "reference.npz")
    status, report, stderr = _worker("reference", "--out", path)
    assert status == 0, stderr[-3000:]
    assert report["params"] == EXPECTED_PARAMS
    return path


@pytest.fixture(scope="module")
def jax_check(reference, tmp_path_factory):
    saved = str(tmp_path_factory.mktemp("backends") / "saved_on_jax.keras")
    status, report, stderr = _worker("check", "--reference", reference, "--backend", "jax",
                                     "--save", saved, "--fixtures", FIXTURES,
                                     "--cases", *CI_CASES)
    return status, report, stderr, saved


@needs_jax
@pytest.mark.slow
def test_jax_gives_tensorflows_numbers_without_tensorflow(jax_check):
    status, report, stderr, _ = jax_check
    assert report["failures"] == [], stderr[-3000:]
    assert status == 0
    assert report["backend"] == "jax" and report["tensorflow_imported"] is False
    assert report["params"] == EXPECTED_PARAMS
    assert sorted(report["max_abs_diff"]) == sorted(CI_CASES)
    assert max(report["max_abs_diff"].values()) <= 1e-5, report["max_abs_diff"]
    # A .keras file saved on TensorFlow loads on JAX and gives the same outputs.
    assert report["keras_file_from_tensorflow_max_abs_diff"] <= 1e-5


@needs_jax
@pytest.mark.slow
def test_jax_blocks_start_as_the_identity_with_zero_init(jax_check):
    _, report, _, _ = jax_check
    assert report["identity_max_abs_error"] == {
        "basic, post-activation": 0.0, "basic, pre-activation": 0.0,
        "bottleneck, post-activation": 0.0, "bottleneck, pre-activation": 0.0}
    # The control: without zero_init_residual the same blocks are far from the identity.
    assert min(report["without_zero_init_max_abs_error"].values()) > 0.1


@needs_jax
@pytest.mark.slow
def test_jax_looped_stages_recompute_and_fit(jax_check):
    _, report, _, _ = jax_check
    # keras.ops.scan (RepeatedBlocks off TensorFlow) computes the unrolled blocks' function,
    # and one epoch of SGD through keras.remat moves both alike.
    assert report["looped_vs_unrolled_max_abs_diff"] <= 1e-5
    assert report["recomputed_after_one_epoch_max_abs_diff"] <= 1e-4
    fit = report["fit"]
    assert fit["last_epoch_loss"] < 0.5 * fit["first_epoch_loss"]
    # PaperSchedule's step decay at 50% / 75% of 20 steps (2 steps per epoch), read by
    # LearningRateLogger at each epoch's last step; PaperWarmup ended the warm-up at once
    # (4 classes: the error is below 80% from the start).
    assert fit["learning_rates"] == pytest.approx([0.1] * 5 + [0.01] * 2 + [0.001] * 3)


@needs_jax
@pytest.mark.slow
def test_jax_reads_torchvision_safetensors_without_tensorflow_or_torch(jax_check):
    _, report, _, _ = jax_check
    # The fixtures hold float16-rounded weights: torchvision's own logits to 1e-4.
    assert sorted(report["pretrained_max_abs_diff"]) == ["tv_bottleneck_1111", "tv_resnet18"]
    assert max(report["pretrained_max_abs_diff"].values()) < 1e-4


@needs_jax
@pytest.mark.slow
def test_a_keras_file_saved_on_jax_loads_on_tensorflow(reference, jax_check):
    saved = jax_check[3]
    assert os.path.isfile(saved), jax_check[2][-3000:]
    status, report, stderr = _worker("load", "--reference", reference, "--model", saved)
    assert status == 0, stderr[-3000:]
    assert report["max_abs_diff"] <= 1e-5


@needs_jax
@pytest.mark.slow
def test_without_tensorflow_each_tensorflow_feature_names_the_extra():
    status, report, stderr = _worker("no-tensorflow", "--backend", "jax", timeout=300)
    assert status == 0, stderr[-3000:]
    features = {
        "keras_resnet.data": "data pipelines (keras_resnet.data, tf.data)",
        "keras_resnet.export": "export (keras_resnet.export: SavedModel and TF Serving files)",
        "keras_resnet.serving": "serving (keras_resnet.serving: the TF Serving client and local "
                                "server)",
        "keras_resnet.tuning": "tuning (keras_resnet.tuning, KerasTuner)",
        "keras_resnet.training": "training runs (keras_resnet.train: tf.data input, run "
                                 "directory, export)",
        "keras_resnet.diagnostics": "diagnostics (keras_resnet.diagnostics)"}
    assert report["errors"] == {module: ["TensorFlowRequired", f"{feature} {MESSAGE}"]
                                for module, feature in features.items()}
    # The CLI: one line, exit 2, no traceback.
    assert report["cli"] == {"status": 2, "stderr": "keras-resnet tune: error: tuning "
                             f"(keras_resnet.tuning, KerasTuner) {MESSAGE}\n"}
    # The core works: the fused BN is Keras' own off TensorFlow, ResNet-20 builds.
    assert report["fused_bn_fallback_max_abs_diff"] == 0.0
    assert report["cifar_resnet20_params"] == 271_098
    assert report["tensorflow_imported"] is False


# ----------------------------------------------------------------------------- the helper

def test_require_tensorflow_passes_where_tensorflow_is_installed():
    assert _tensorflow.tensorflow_available() is True
    assert _tensorflow.require_tensorflow("anything") is None
    assert _tensorflow.require_tensorflow_backend("export") is None  # this suite: TF backend


def test_require_tensorflow_names_the_feature_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert _tensorflow.tensorflow_available() is False
    with pytest.raises(_tensorflow.TensorFlowRequired) as caught:
        _tensorflow.require_tensorflow("tuning")
    assert str(caught.value) == f"tuning {MESSAGE}"
    assert isinstance(caught.value, ImportError)  # `except ImportError` keeps working
    with pytest.raises(_tensorflow.TensorFlowRequired, match=r"^export needs TensorFlow"):
        _tensorflow.require_tensorflow_backend("export")


def test_require_tensorflow_backend_names_keras_backend(monkeypatch):
    monkeypatch.setattr(_tensorflow, "keras_backend", lambda: "jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(_tensorflow.TensorFlowBackendRequired) as caught:
        _tensorflow.require_tensorflow_backend("export_saved_model (SavedModel for TF Serving)")
    assert str(caught.value) == (
        "export_saved_model (SavedModel for TF Serving) needs the TensorFlow backend of Keras, "
        "but Keras runs on 'jax' (KERAS_BACKEND='jax'); run it with KERAS_BACKEND=tensorflow")


def test_a_missing_module_of_the_extra_becomes_the_one_message():
    missing = ModuleNotFoundError("No module named 'keras_tuner'", name="keras_tuner")
    error = _tensorflow.as_tensorflow_required(missing, "`keras-resnet tune`")
    assert isinstance(error, _tensorflow.TensorFlowRequired)
    assert str(error) == ("`keras-resnet tune` needs TensorFlow, but 'keras_tuner' is not "
                          "installed; install it with: pip install 'keras_resnet[tensorflow]'")
    other = ModuleNotFoundError("No module named 'yaml'", name="yaml")
    assert _tensorflow.as_tensorflow_required(other, "x") is None


def test_the_cli_prints_a_missing_extra_in_one_line(monkeypatch, capsys):
    from keras_resnet import cli
    from keras_resnet.cli import summary

    def missing_extra(args):
        raise ModuleNotFoundError("No module named 'tensorflow_serving'",
                                  name="tensorflow_serving.apis")

    def missing_other(args):
        import keras_resnet_no_such_module  # noqa: F401

    monkeypatch.setattr(summary, "run", missing_extra)  # registered by build_parser
    assert cli.main(["summary"]) == 2
    assert capsys.readouterr().err == (
        "keras-resnet summary: error: `keras-resnet summary` needs TensorFlow, but "
        "'tensorflow_serving' is not installed; install it with: "
        "pip install 'keras_resnet[tensorflow]'\n")
    # Any other missing module is a bug, not a missing extra: its traceback stays.
    monkeypatch.setattr(summary, "run", missing_other)
    with pytest.raises(ModuleNotFoundError, match="keras_resnet_no_such_module"):
        cli.main(["summary"])


def test_export_on_another_backend_is_refused_before_any_work(monkeypatch, tmp_path):
    from keras_resnet import CifarResNet
    from keras_resnet.export import export_saved_model

    monkeypatch.setattr(_tensorflow, "keras_backend", lambda: "torch")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    model = CifarResNet(8, input_shape=(8, 8, 3), classes=3)
    with pytest.raises(_tensorflow.TensorFlowBackendRequired,
                       match=r"^export_saved_model \(its serving signatures are TensorFlow "
                             r"graphs around the model; save the model with model.save and "
                             r"export it with keras-resnet export MODEL.keras\) needs the "
                             r"TensorFlow backend of Keras, but Keras runs on 'torch'"):
        export_saved_model(model, str(tmp_path / "models"))
    assert not (tmp_path / "models").exists()


def test_recompute_grad_off_tensorflow_relies_on_the_pinned_keras_remat():
    """keras>=3.12 (pyproject) has keras.remat, so the looped stages call it without a fallback."""
    import keras

    pyproject = open(os.path.join(REPO_ROOT, "pyproject.toml")).read()
    assert '"keras>=3.12,' in pyproject
    assert callable(keras.remat)
