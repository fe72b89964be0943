"""The op-type profiler (``benchmarks/op_profiler.py``) reads real TensorFlow profiler traces.

Op names and timings differ between TensorFlow builds and CPUs (oneDNN on AVX-512 names the fused
convolution ``_MklNativeFusedConv2D``), so the tests assert behaviour: what is fused, what is left,
how the table is ordered, never one build's names or which op happens to be the slowest."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import CifarResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from op_profiler import compare, op_times  # noqa: E402


def _inference(model):
    call = tf.function(lambda x: model(x, training=False))
    images = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), "float32")
    call(images)
    return lambda: call(images).numpy()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return set(cpuinfo.read().split())
    except OSError:
        return set()


# oneDNN runs bfloat16 natively, and TensorFlow's remapper fuses bfloat16 ops, only on CPUs with
# AVX-512 (oneDNN's avx512_core); elsewhere TensorFlow emulates bfloat16 with unfused Eigen
# kernels, so the fusion counts below do not apply there.
needs_onednn_bf16 = pytest.mark.skipif(
    not {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= _cpu_flags(),
    reason="bfloat16 fusions need oneDNN's AVX-512 kernels; this CPU emulates bfloat16")


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
    assert not [op for op in times if "BatchNorm" in op or op == "Rsqrt"], sorted(times)
    assert sum(times[op] for op in convolutions) > 0
    assert all(seconds >= 0 for seconds in times.values())


def test_keras_batch_norm_leaves_elementwise_ops_behind():
    # The same network with Keras' own BatchNormalization: its arithmetic stays separate.
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    times = op_times(_inference(model), repeats=1)
    # (oneDNN builds may prefix the names, so match the arithmetic, not one build's spelling)
    assert [op for op in times if "Mul" in op or "AddV2" in op], sorted(times)


def test_compare_prints_one_column_per_function_slowest_ops_first():
    model = CifarResNet(8)
    table = compare({"first": _inference(model), "second": _inference(model)}, repeats=1, top=3)
    lines = table.splitlines()
    assert lines[0] == "| op type | first (ms) | second (ms) |"
    assert lines[-1].startswith("| **total op time** |")
    rows = [[float(cell.strip(" *")) for cell in line.split("|")[2:-1]] for line in lines[2:]]
    listed, total = rows[:-1], rows[-1]
    assert len(listed) == 4  # the top 3 op types and one row for the rest
    # Ordered by the op's largest time in any column (the "other" row is last).
    largest = [max(row) for row in listed[:3]]
    assert largest == sorted(largest, reverse=True)
    for column in (0, 1):  # every row is part of the total (rounded to 0.1 ms)
        assert sum(row[column] for row in listed) == pytest.approx(total[column], abs=0.25)


@pytest.mark.parametrize("repeats,error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                           (True, TypeError)])
def test_bad_repeats(repeats, error):
    with pytest.raises(error) as info:
        op_times(lambda: None, repeats=repeats)
    assert str(info.value) == f"repeats must be a positive int (1, 2, 64, ...); got {repeats!r}"


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


def test_bf16_training_step_keeps_batch_norm_fused_and_casts_each_kernel_once():
    import profile_bf16

    graph, variables = profile_bf16.traced_step(18, "mixed_bfloat16")
    counts, weight_casts = profile_bf16.count_ops(list(graph.as_graph_def().node))
    convolutions = 20  # ResNet-18: stem, 16 in the blocks, 3 projection shortcuts
    for op, half in (("FusedBatchNormV3", "forward"), ("FusedBatchNormGradV3", "backward"),
                     ("Conv2D", "forward"), ("Conv2DBackpropInput", "backward"),
                     ("Conv2DBackpropFilter", "backward")):
        assert counts[(op, half, "bfloat16")] == convolutions, op
        assert counts[(op, half, "float32")] == 0, op  # no fallback to float32 kernels
    # Mixed precision casts each float32 kernel to bfloat16 once per step (BN's scale and
    # offset stay float32: the fused kernel takes them so) and its gradient back once.
    assert weight_casts == convolutions
    assert counts[("Cast", "forward", "float32->bfloat16")] == convolutions + 2  # + images, labels
    assert counts[("Cast", "backward", "bfloat16->float32")] == convolutions + 1
    # Activations are not cast around the batch norms; only the pooled head leaves bfloat16.
    assert counts[("Cast", "forward", "bfloat16->float32")] == 2
    table = profile_bf16.format_counts((counts, weight_casts), (counts, weight_casts), variables)
    assert table.splitlines()[0] == "| op | half | dtype | traced | after grappler |"
    assert "| FusedBatchNormV3 | forward | bfloat16 | 20 | 20 |" in table.splitlines()
    assert table.splitlines()[-1] == f"| trainable variables | - | - | {variables} | {variables} |"


@pytest.mark.slow
@needs_onednn_bf16
def test_profile_bf16_script_counts_before_and_after_grappler():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_bf16.py")],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "### ResNet-18 training step, mixed_bfloat16" in lines
    assert "| Cast of ReadVariableOp (weight casts) | forward | - | 20 | 20 |" in lines
    fused = [line for line in lines if line.startswith("| _FusedBatchNormEx | forward | bfloat16")]
    assert len(fused) == 1 and int(fused[0].split("|")[5]) > 0  # grappler fuses BN + ReLU


def test_profile_bf16_runtime_op_types_show_fused_batch_norm_in_both_precisions():
    import profile_bf16

    for policy in ("float32", "mixed_bfloat16"):
        ops = profile_bf16.runtime_op_types(policy, train=True)
        assert ops == sorted(ops)
        # Training runs TensorFlow's fused BN kernels in both precisions, never Keras' unfused
        # arithmetic (whose variance would run an Rsqrt).
        assert [op for op in ops if "FusedBatchNormGradV3" in op], (policy, ops)
        assert "Rsqrt" not in ops, (policy, ops)
    inference = profile_bf16.runtime_op_types("float32", train=False)
    assert not [op for op in inference if "BatchNorm" in op], inference  # folded into the convs


@needs_onednn_bf16
def test_folding_brings_the_convolution_fusion_back_to_bf16_inference():
    import profile_bf16

    # TensorFlow's remapper folds FusedBatchNormV3 into the convolution only in float32;
    # fold_batch_norm does it in the model, so bfloat16 inference runs fused convolutions too.
    ops = profile_bf16.runtime_op_types("mixed_bfloat16", train=False, fold=True)
    convolutions = [op for op in ops if "Conv2D" in op]
    assert convolutions and all(_is_fused_convolution(op) for op in convolutions), ops
    assert not [op for op in ops if "BatchNorm" in op], ops
