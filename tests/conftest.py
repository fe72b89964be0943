"""Shared test set-up: quiet TensorFlow, deterministic seeds, a fresh Keras session per test, and
the fixtures several test files use (``repo_root``, ``small_model``, ``free_port``)."""

import os
import pathlib
import socket

# The test process only (the library itself never changes the environment): keep TensorFlow's
# C++ start-up chatter out of the test output. Set before keras loads TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def repo_root():
    """The source checkout's root directory (README.md, examples/, benchmarks/)."""
    return REPO_ROOT


@pytest.fixture
def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def small_model():
    """A factory of tiny trained-model stand-ins: raw 0..255 8x8x1 pixels in, 3 classes out.

    Normalization is inside the model, as in the models ``train`` writes; call it as
    ``small_model()`` or ``small_model(name="pets")``.
    """
    from keras_resnet import ResNet

    def make(name="tiny"):
        body = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                      classes=3)
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0), body],
                                name=name)

    return make
