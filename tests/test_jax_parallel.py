"""Data-parallel training on the JAX backend (``keras_resnet.distribute.jax_parallel``).

The JAX runs are fresh processes with ``KERAS_BACKEND=jax`` and two XLA host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``): the backend and the device count are
fixed when Keras and JAX start. The choice of strategy and the even sharding of the batches are
pure logic and tf.data, tested in this (TensorFlow-backend) process.
"""

import json
import os

import numpy as np
import pytest

from keras_resnet.distribute import jax_parallel
from tests.test_distribute import run_python, tf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_TWO_DEVICES = {"KERAS_BACKEND": "jax",
                   "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


@pytest.mark.parametrize("name, devices, expected", [
    ("auto", 1, "one-device"),
    ("auto", 2, "mirrored"),
    ("one-device", 2, "one-device"),
    ("mirrored", 1, "mirrored"),
    ("mirrored", 8, "mirrored"),
])
def test_strategy_names_on_jax(name, devices, expected):
    assert jax_parallel.choose_strategy(name, devices=devices, environ={}) == expected


@pytest.mark.parametrize("name, environ, given", [
    ("multi-worker", {}, "strategy 'multi-worker'"),
    ("multi-worker", tf_config(workers=2), "strategy 'multi-worker'"),
    ("auto", tf_config(workers=2), "strategy 'auto' with TF_CONFIG naming 2 tasks"),
    ("mirrored", tf_config(workers=3), "strategy 'mirrored' with TF_CONFIG naming 3 tasks"),
])
def test_multi_worker_on_jax_names_the_backend_and_the_way_out(name, environ, given):
    with pytest.raises(ValueError, match=(
            r"^multi-worker training needs the tensorflow backend \(MultiWorkerMirroredStrategy"
            rf"\); got {given} on backend 'jax': run with KERAS_BACKEND=tensorflow, or train on "
            r"this machine's devices with strategy 'mirrored' \(keras.distribution."
            r"DataParallel\) and no TF_CONFIG$")):
        jax_parallel.choose_strategy(name, devices=2, environ=environ)
    with pytest.raises(ValueError, match=r"strategy must be one of .*got 'horovod'"):
        jax_parallel.choose_strategy("horovod", devices=2, environ={})


def _batch_sizes(pipeline):
    return [int(x.shape[0]) for x, _ in pipeline]


def test_shard_evenly_cuts_only_the_last_batch_to_a_multiple_of_the_devices():
    from keras_resnet.data import load_dataset

    # 103 images: 73 train (4 x 16 + 9), 9 validation, 21 test (16 + 5)
    data = load_dataset("synthetic", image_size=(4, 4), num_classes=2, num_examples=103,
                        batch_size=16, seed=0, validation_split=0.1, test_split=0.2,
                        augment=False)
    assert (data.train_size, data.validation_size, data.test_size) == (73, 9, 21)
    assert jax_parallel.shard_evenly(data, 1) == (data, {"train": 0, "validation": 0,
                                                         "test": 0})
    even, left_out = jax_parallel.shard_evenly(data, 2)
    assert left_out == {"train": 1, "validation": 1, "test": 1}
    assert _batch_sizes(even.train) == [16, 16, 16, 16, 8]
    assert _batch_sizes(even.validation) == [8]
    assert _batch_sizes(even.test) == [16, 4]
    assert (even.train_size, even.validation_size, even.test_size) == (72, 8, 20)
    assert even.steps_per_epoch == 5 == len(even.train)  # cardinality kept: Keras counts steps
    # the kept images are the first ones of the batch, with their labels
    last, kept = list(data.test)[1], list(even.test)[1]
    np.testing.assert_array_equal(kept[0].numpy(), last[0].numpy()[:4])
    np.testing.assert_array_equal(kept[1].numpy(), last[1].numpy()[:4])
    # a last batch smaller than the device count is left out whole
    wide, left_out = jax_parallel.shard_evenly(data, 8)
    assert left_out == {"train": 1, "validation": 1, "test": 5}
    assert _batch_sizes(wide.test) == [16] and wide.test_size == 16 and len(wide.test) == 1
    widest, left_out = jax_parallel.shard_evenly(data, 16)
    assert left_out == {"train": 9, "validation": 9, "test": 5}
    assert _batch_sizes(widest.train) == [16] * 4 and widest.steps_per_epoch == 4
    assert (widest.validation, widest.validation_size) == (None, 0)  # fit validates on nothing


def test_shard_evenly_cuts_inside_the_train_order_so_a_resumed_epoch_is_cut_too():
    from keras_resnet.data import load_dataset

    # digits: 1293 training images = 10 x 128 + 13; over 2 devices the last batch keeps 12
    data = load_dataset("digits", batch_size=128, seed=0)
    even, left_out = jax_parallel.shard_evenly(data, 2)
    assert left_out["train"] == 1 and even.train_size == 1292
    assert even.train_order is not data.train_order and even.train_order.built(even.train)
    assert even.train_order.steps == 11 == len(even.train)
    even.train_order.epoch.assign(1)
    epoch = [(x.numpy(), y.numpy()) for x, y in even.train]
    assert [len(y) for _, y in epoch] == [128] * 10 + [12]
    remainder = [(x.numpy(), y.numpy()) for x, y in even.train_order.remainder(1, 7)]
    assert len(remainder) == 4
    for (x, y), (rx, ry) in zip(epoch[7:], remainder):
        np.testing.assert_array_equal(rx, x)
        np.testing.assert_array_equal(ry, y)
    # a last batch smaller than the devices is dropped from the order's epochs too
    wide, left_out = jax_parallel.shard_evenly(data, 16)
    assert left_out["train"] == 13 and wide.train_order.steps == 10 == len(wide.train)
    assert len(list(wide.train_order.remainder(0, 8))) == 2


def test_shard_evenly_refuses_a_test_split_smaller_than_the_devices():
    from keras_resnet.data import load_dataset

    data = load_dataset("synthetic", image_size=(4, 4), num_classes=2, num_examples=40,
                        batch_size=8, seed=0, validation_split=0.1, test_split=0.1,
                        augment=False)
    assert data.test_size == 4
    with pytest.raises(ValueError, match=r"^the test split's 4 images are fewer than the 8 "
                                         r"devices a batch is sharded over; give more test "
                                         r"images \(test_split\) or use fewer devices$"):
        jax_parallel.shard_evenly(data, 8)


FIT = """
import json
import jax
import keras
import numpy as np
import tensorflow as tf
from keras_resnet.distribute import jax_parallel

seen = {}


class Probe(keras.layers.Layer):
    # identity; records the sharding XLA gives its input inside the compiled train step
    def call(self, inputs):
        jax.debug.inspect_array_sharding(inputs, callback=lambda s: seen.setdefault(
            self.name, [list(s.shard_shape(tuple(inputs.shape))), len(s.device_set)]))
        return inputs


def make(probe):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(Probe(name=probe)(inputs))
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


rng = np.random.default_rng(0)
# per-image offsets 0..7: the two devices' halves of a batch have very different means
x = (rng.normal(size=(32, 6, 6, 3)) + np.arange(32)[:, None, None, None] % 8).astype("float32")
y = rng.integers(0, 3, 32)
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 4 global batches of 8


def fit(name):
    strategy, description = jax_parallel.make_strategy(name, 8)
    with strategy.activated():
        model = make(name)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      "sparse_categorical_crossentropy", jit_compile=True)
        model.fit(data, epochs=2, shuffle=False, verbose=0)  # 8 steps
    return model, description


one, one_description = fit("one-device")
dp, dp_description = fit("mirrored")
print(json.dumps({
    "descriptions": [one_description, dp_description], "seen": seen,
    "paths": [v.path for v in dp.weights],
    "one": [np.asarray(v.value).tolist() for v in one.weights],
    "dp": [np.asarray(v.value).tolist() for v in dp.weights],
    "shardings": [[len(v.value.sharding.device_set), v.value.is_fully_replicated,
                   all(axis is None for axis in v.value.sharding.spec)] for v in dp.weights],
}))
"""


@pytest.mark.slow
def test_data_parallel_fit_equals_one_device_on_the_global_batches():
    result = json.loads(run_python(FIT, env=JAX_TWO_DEVICES).strip().splitlines()[-1])
    one, dp = result["descriptions"]
    assert one == {"strategy": "one-device", "backend": "jax", "engine": None, "replicas": 1,
                   "workers": 1, "task_type": None, "task_index": None, "is_chief": True,
                   "devices": ["cpu:0"]}
    assert dp == {**one, "strategy": "mirrored", "engine": "keras.distribution.DataParallel",
                  "replicas": 2, "devices": ["cpu:0", "cpu:1"]}
    # Inside the compiled step each device holds half of the global batch of 8...
    assert result["seen"] == {"one-device": [[8, 6, 6, 3], 1], "mirrored": [[4, 6, 6, 3], 2]}
    # ...and a whole copy of every variable.
    assert len(result["paths"]) == 7
    for path, sharding in zip(result["paths"], result["shardings"]):
        assert sharding == [2, True, True], path  # 2 devices, fully replicated, no axis split
    # 8 steps on 2 devices give one device's weights on the same global batches, batch
    # normalization's moving statistics included: XLA computes the batch mean and variance
    # over the whole sharded batch (the halves' means differ by ~4, so per-device statistics
    # would move the moving mean by O(1)). The differences are float32 summation order
    # (two partial sums and an all-reduce); measured 4.5e-7 on the weights and 5.5e-6
    # relative on the moving variance (values up to 36).
    assert "bn/moving_mean" in result["paths"]
    for path, a, b in zip(result["paths"], result["one"], result["dp"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-6, err_msg=path)
    moving_mean = np.asarray(result["dp"][result["paths"].index("bn/moving_mean")])
    assert np.abs(moving_mean).max() > 1  # the statistics did move


ERRORS = """
import contextlib
import io
import json
import os
import keras
from keras_resnet.cli import main

def call(argv, environ=None):
    os.environ.pop("TF_CONFIG", None)
    os.environ.update(environ or {})
    error = io.StringIO()
    with contextlib.redirect_stderr(error):
        status = main(["train", "--out", "runs", "--no-export", *argv])
    return [status, error.getvalue()]

results = [
    call(["--strategy", "mirrored", "--batch-size", "33"]),
    call(["--batch-size", "7"]),  # auto: mirrored over the 2 devices
    call(["--strategy", "multi-worker"]),
    call(["--strategy", "auto"], {"TF_CONFIG": json.dumps({
        "cluster": {"worker": ["127.0.0.1:2000", "127.0.0.1:2001"]},
        "task": {"type": "worker", "index": 0}})}),
]
try:
    from keras_resnet.export import export_saved_model
    export_saved_model(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                         keras.layers.Dense(2, activation="softmax")]), "out")
except RuntimeError as error:  # TensorFlowBackendRequired
    results.append(str(error))
print(json.dumps({"results": results, "runs": os.path.exists("runs"),
                  "out": os.path.exists("out")}))
"""


@pytest.mark.slow
def test_jax_strategy_errors_exit_2_before_training(tmp_path):
    code = f"import os\nos.chdir({str(tmp_path)!r})\n" + ERRORS
    result = json.loads(run_python(code, env=JAX_TWO_DEVICES).strip().splitlines()[-1])
    mirrored, auto, multi_worker, cluster, export = result["results"]
    prefix = "keras-resnet train: error: "
    assert mirrored == [2, prefix + "--batch-size must be a multiple of the 2 devices strategy "
                        "'mirrored' splits it over on backend 'jax' (it is the global batch); "
                        "got 33\n"]
    assert auto == [2, prefix + "--batch-size must be a multiple of the 2 devices strategy "
                    "'mirrored' splits it over on backend 'jax' (it is the global batch); "
                    "got 7\n"]
    way_out = ("on backend 'jax': run with KERAS_BACKEND=tensorflow, or train on this "
               "machine's devices with strategy 'mirrored' (keras.distribution.DataParallel) "
               "and no TF_CONFIG\n")
    assert multi_worker == [2, prefix + "multi-worker training needs the tensorflow backend "
                            "(MultiWorkerMirroredStrategy); got strategy 'multi-worker' "
                            + way_out]
    assert cluster == [2, prefix + "multi-worker training needs the tensorflow backend "
                       "(MultiWorkerMirroredStrategy); got strategy 'auto' with TF_CONFIG "
                       "naming 2 tasks " + way_out]
    assert export == ("export_saved_model (its serving signatures are TensorFlow graphs around "
                      "the model; save the model with model.save and export it with keras-resnet "
                      "export MODEL.keras) needs the TensorFlow backend of Keras, but Keras runs "
                      "on 'jax' (KERAS_BACKEND='jax'); run it with KERAS_BACKEND=tensorflow")
    # nothing was trained or written: the runs directory was never made
    assert (result["runs"], result["out"]) == (False, False)


@pytest.mark.slow
def test_cli_mirrored_on_jax_trains_records_and_exports(tmp_path):
    import subprocess
    import sys

    environ = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="-1", **JAX_TWO_DEVICES)
    environ.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "keras_resnet", "train", "--epochs", "1", "--batch-size", "256",
         "--strategy", "mirrored", "--sync-bn", "--lr-batch-size", "128", "--out",
         str(tmp_path / "runs"), "--export", str(tmp_path / "saved"), "--name", "dp",
         "--verbose", "0"], env=environ, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "sync_bn: nothing to do on backend jax" in out
    assert ("Batches sharded over 2 devices: the last batch of each split is cut to a multiple "
            "of 2 (left out per epoch: train 1, validation 0, test 0)") in out
    assert ("strategy       mirrored (keras.distribution.DataParallel): 2 replica(s) on 1 "
            "worker(s), learning rate 0.2") in out
    metrics = json.loads((tmp_path / "runs" / "dp" / "metrics.json").read_text())
    assert metrics["backend"] == "jax"
    assert metrics["distribution"] == {
        "strategy": "mirrored", "backend": "jax", "engine": "keras.distribution.DataParallel",
        "replicas": 2, "workers": 1, "task_type": None, "task_index": None, "is_chief": True,
        "devices": ["cpu:0", "cpu:1"], "left_out": {"train": 1, "validation": 0, "test": 0}}
    assert metrics["learning_rate_used"] == pytest.approx(0.1 * 256 / 128)
    assert (metrics["batch_size"], metrics["train_size"], metrics["test_size"]) == (256, 1292,
                                                                                    360)
    assert metrics["config"]["strategy"] == "mirrored" and metrics["config"]["sync_bn"] is True
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test_loss"])
    # the export came from a TensorFlow-backend process reading model.keras
    export = tmp_path / "saved" / "dp" / "1"
    assert metrics["export_path"] == str(export)
    assert (export / "saved_model.pb").is_file()
    info = json.loads((export / "assets.extra" / "keras_resnet_export.json").read_text())
    assert (info["name"], info["spec"]["crop_fraction"]) == ("dp", 1.0)
    assert info["spec"]["class_names"] == [str(digit) for digit in range(10)]


@pytest.mark.slow
def test_export_from_another_backend_reports_the_export_processs_error(tmp_path):
    from keras_resnet.training.tf_export import export_in_tensorflow

    missing = str(tmp_path / "model.keras")
    with pytest.raises(RuntimeError, match=(
            rf"^the SavedModel export of {missing} in a TensorFlow-backend process failed "
            r"\(exit 1\): ValueError: File not found: filepath=.*model\.keras")):
        export_in_tensorflow(missing, str(tmp_path / "saved"), name="m", class_names=["a"],
                             crop_fraction=1.0)
    assert not (tmp_path / "saved").exists()
