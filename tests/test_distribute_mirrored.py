"""Mirrored training over 2 logical CPU devices against one device (fresh processes: logical
devices must be configured before TensorFlow starts, and one MirroredStrategy serves a process
because CPU collectives of a second one collide with the first's)."""

import json

import pytest

from tests.test_distribute import run_python

PRELUDE = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_resnet.distribute import make_strategy
from keras_resnet.distribute.sync_bn import count_synchronized, synchronize_batch_norm
ONE, _ = make_strategy("one-device", devices=["/cpu:0"])
MIRRORED, _ = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])

def max_differences(a, b):
    return [float(np.abs(x - y).max()) for x, y in zip(a, b)]
"""


@pytest.mark.slow
def test_fused_batch_norm_under_mirrored_matches_keras_and_sync_matches_one_device():
    out = run_python(PRELUDE + """
from keras_resnet.modeling.fused_batch_norm import FusedBatchNormalization

def make(norm):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = norm(momentum=0.5, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    return model

rng = np.random.default_rng(0)
# per-image offsets: the two replicas' halves of the batch have very different means
x = (rng.normal(size=(8, 6, 6, 3)) + np.arange(8)[:, None, None, None]).astype("float32")
y = rng.integers(0, 3, 8)
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

def step(strategy, norm, sync=False):
    with strategy.scope():
        model = make(norm)
        if sync:
            model = synchronize_batch_norm(model)
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    return model

reference = step(ONE, keras.layers.BatchNormalization)
fused_one = step(ONE, FusedBatchNormalization)
keras_mirrored = step(MIRRORED, keras.layers.BatchNormalization)
fused_mirrored = step(MIRRORED, FusedBatchNormalization)
fused_sync = step(MIRRORED, FusedBatchNormalization, sync=True)
w = lambda m: m.get_weights()
print(json.dumps({
    "fused_one_vs_keras_one": max(max_differences(w(reference), w(fused_one))),
    "fused_mirrored_vs_keras_mirrored": max(max_differences(w(keras_mirrored), w(fused_mirrored))),
    "fused_sync_vs_one_device": max(max_differences(w(reference), w(fused_sync))),
    "moving_mean_unsynced_vs_one_device": float(np.abs(
        reference.get_layer("bn").moving_mean.numpy()
        - fused_mirrored.get_layer("bn").moving_mean.numpy()).max()),
    "sync_layers": count_synchronized(fused_sync),
    "sync_class": type(fused_sync.get_layer("bn")).__name__,
}))
""")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["fused_one_vs_keras_one"] < 1e-5
    # The fused layer behaves exactly like Keras' own under a strategy...
    assert result["fused_mirrored_vs_keras_mirrored"] < 1e-5
    # ...and, synchronized, like one device on the global batch.
    assert result["fused_sync_vs_one_device"] < 1e-5
    assert (result["sync_layers"], result["sync_class"]) == (1, "FusedBatchNormalization")
    # Unsynchronized, each replica normalizes its own half (documented, not a defect).
    assert result["moving_mean_unsynced_vs_one_device"] > 0.1


@pytest.mark.slow
def test_mirrored_fit_with_sync_bn_equals_one_device_on_the_global_batch():
    """K=3 SGD steps of a CIFAR ResNet-8 (with the recipe's momentum, L2, schedule) on digits:
    2 replicas x 8 images against 1 device x 16; all-reduced gradients give the same weights."""
    out = run_python(PRELUDE + """
from keras_resnet.data import load_dataset
from keras_resnet.modeling.models import CifarResNet
from keras_resnet.modeling.recipe import PaperSchedule, build_model, compile_model

def train(strategy, sync):
    keras.utils.set_random_seed(0)
    data = load_dataset("digits", batch_size=16, augment=False, seed=0)
    with strategy.scope():
        model = build_model(CifarResNet(8, input_shape=data.input_shape, classes=10), data)
        if sync:
            model = synchronize_batch_norm(model)
            assert count_synchronized(model) == 7, count_synchronized(model)  # nested too
        compile_model(model, learning_rate=PaperSchedule(0.1, 6), jit_compile=False)
    model.fit(data.train, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
    return model.get_weights(), int(model.optimizer.iterations.numpy())

one, one_steps = train(ONE, False)
mirrored, mirrored_steps = train(MIRRORED, True)
plain, _ = train(MIRRORED, False)
print(json.dumps({"sync": max(max_differences(one, mirrored)),
                  "unsynced": max(max_differences(one, plain)),
                  "steps": [one_steps, mirrored_steps]}))
""", timeout=300)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["steps"] == [3, 3]
    assert result["sync"] < 1e-4
    assert result["unsynced"] > result["sync"]
