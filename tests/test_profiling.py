"""The op-type profiler reads real TensorFlow profiler traces."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import CifarResNet
from keras_resnet.profiling import compare, op_times

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inference(model):
    call = tf.function(lambda x: model(x, training=False))
    images = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), "float32")
    call(images)
    return lambda: call(images).numpy()


def _is_fused_convolution(op_type):
    # TensorFlow's remapper names the op `_FusedConv2D`; oneDNN builds on AVX-512 CPUs name the
    # same fusion `_MklNativeFusedConv2D` (and `_MklNativePadWithFusedConv2D` when it also
    # absorbs the explicit padding). The behaviour is what counts, not one build's names.
    return "Conv2D" in op_type and "Fused" in op_type


def test_fused_batch_norm_disappears_into_the_convolutions_at_inference():
    times = op_times(_inference(CifarResNet(8)), repeats=2)
    convolutions = {op for op in times if "Conv2D" in op}
    # Every convolution ran as a fused one, and no BN arithmetic ran on its own: the remapper
    # folded each Conv2D + BN (+ ReLU) into one op. (ReLUs after a residual addition stay.)
    assert convolutions and all(_is_fused_convolution(op) for op in convolutions), sorted(times)
    assert not {"FusedBatchNormV3", "FusedBatchNormV2", "FusedBatchNorm", "Rsqrt",
                "_MklFusedBatchNormV3"} & set(times), sorted(times)
    assert sum(times[op] for op in convolutions) > 0
    assert all(seconds >= 0 for seconds in times.values())


def test_keras_batch_norm_leaves_elementwise_ops_behind():
    # The same network with Keras' own BatchNormalization: its arithmetic stays separate.
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    times = op_times(_inference(model), repeats=1)
    assert "Mul" in times or "AddV2" in times


def test_compare_prints_one_column_per_function():
    model = CifarResNet(8)
    table = compare({"first": _inference(model), "second": _inference(model)}, repeats=1, top=3)
    lines = table.splitlines()
    assert lines[0] == "| op type | first (ms) | second (ms) |"
    # the slowest op is a fused convolution, whatever this build calls it
    first_op = lines[2].split("|")[1].strip()
    assert _is_fused_convolution(first_op), table
    assert lines[-1].startswith("| **total op time** |")


@pytest.mark.parametrize("repeats", [0, 1.5, True])
def test_bad_repeats(repeats):
    with pytest.raises(ValueError, match=f"repeats must be a positive integer; got {repeats!r}"):
        op_times(lambda: None, repeats=repeats)


@pytest.mark.slow
def test_profile_ops_script_quick():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_ops.py"),
                             "--quick", "--repeats", "1"], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.count("**total op time**") == 4
    assert "| op type | ours (ms) | keras.applications (ms) |" in out
    assert "| op type | float32 (ms) | mixed_bfloat16 (ms) |" in out


def test_profile_build_script_splits_the_build_time():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_build.py"),
                             "--depth", "20"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    # 19 convolutions and 19 BN (4 variables each) plus the Dense kernel and bias.
    assert out.startswith("CIFAR ResNet-20: 97 variables, build ")
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines()
            if line.startswith("| ")}
    shares = {name: int(rows[name][-2].strip(" %")) for name in
              ("tensorflow", "keras", "keras_resnet", "Python itself (built-ins, standard library)")
              if name in rows}
    assert {"tensorflow", "keras"} <= set(shares)
    assert 95 <= sum(shares.values()) <= 105  # disjoint: they add up to the whole build
    assert 5 <= int(rows["TensorFlow resource variable creation"][-2].strip(" %")) <= 95
    assert "| tf.Variable(tf.zeros([64])) |" in out
