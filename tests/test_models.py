"""Models: exact parameter counts, multiply-adds, keras.applications equivalence, round trips,
very deep builds and bad input."""

import hashlib
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_resnet import (CifarResNet, ResNet, ResNet18, ResNet50, ResNet101, ResNet152, build,
                          model_stats)
from keras_resnet.modeling import presets
from keras_resnet.cli import main
from keras_resnet.modeling.applications_weights import imagenet_weights_path


def trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.mark.parametrize("depth", [18, 34, 50, pytest.param(101, marks=pytest.mark.slow),
                                   pytest.param(152, marks=pytest.mark.slow)])
def test_imagenet_parameters_equal_torchvision(depth):
    model = ResNet(depth)
    assert trainable(model) == presets.TORCHVISION_PARAMS[depth]
    assert model.output.shape == (None, 1000)


# Exact trainable parameters of the CIFAR ResNets with option-A shortcuts; the paper's Table 6
# rounds them to 0.27M, 0.46M, 0.66M, 0.85M, 1.7M and 19.4M.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962,
                1202: 19_421_274}


def _cifar_option_a_params(n, classes=10):
    """Trainable parameters of a 6n+2 CIFAR ResNet counted by hand from its description."""
    params = 3 * 3 * 3 * 16 + 2 * 16  # stem: 3x3 conv without bias, BN gamma and beta
    in_width = 16
    for width in (16, 32, 64):
        for _ in range(n):  # two 3x3 convs + BNs per block; option A adds no parameters
            params += 9 * in_width * width + 2 * width + 9 * width * width + 2 * width
            in_width = width
    return params + 64 * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])  # 1202: the plain-process test below
def test_cifar_parameters_match_the_paper(depth):
    model = CifarResNet(depth)
    counted = trainable(model)
    assert counted == _cifar_option_a_params((depth - 2) // 6) == CIFAR_PARAMS[depth]
    assert round(counted / 1e6, 2 if depth < 100 else 1) == presets.PAPER_CIFAR_MEGA_PARAMS[depth]
    assert model_stats(model)["depth"] == depth
    assert model.output.shape == (None, 10)


@pytest.mark.parametrize("depth,expected", [(164, 1_703_258),
                                            pytest.param(1001, 10_327_706,
                                                         marks=pytest.mark.slow)])
def test_preact_bottleneck_cifar_parameters(depth, expected):
    model = CifarResNet(depth, preact=True, bottleneck=True)
    counted = trainable(model)
    assert counted == expected
    # He et al. 2016 print 1.7M and 10.2M; counted exactly, ResNet-1001 has 10.33M (the same
    # count other exact re-implementations report), so the paper's figure is off by 0.13M.
    assert abs(counted / 1e6 - presets.PAPER_CIFAR_PREACT_MEGA_PARAMS[depth]) < 0.15
    assert model_stats(model)["depth"] == depth


def test_plain_twin_has_the_same_weights_but_no_shortcuts():
    resnet, plain = CifarResNet(20), CifarResNet(20, plain=True)
    assert trainable(plain) == trainable(resnet)  # option A shortcuts have no parameters
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain.layers)
    assert sum(isinstance(layer, keras.layers.Add) for layer in resnet.layers) == 9
    assert plain.name == "cifar_plain20"


@pytest.mark.slow
def test_multiply_adds_reproduce_the_papers_table_1():
    # The paper prints one decimal: 1.8, 3.6, 3.8, 7.6, 11.3 billion. Counted from the layers
    # with the stride in the first 1x1 we get 1.81, 3.66, 3.86, 7.57, 11.28: the paper truncates
    # some and rounds others, so each must agree to within its printed precision (0.07 G).
    expected = {18: 1_814_073_344, 34: 3_663_761_408, 50: 3_857_973_248, 101: 7_570_194_432,
                152: 11_282_415_616}
    for depth, macs in expected.items():
        counted = model_stats(ResNet(depth, stride_on="1x1"))["multiply_adds"]
        assert counted == macs
        assert abs(counted / 1e9 - presets.PAPER_GIGA_MULTIPLY_ADDS[depth]) < 0.07
    # torchvision's placement (stride on the 3x3) costs more: the well-known 4.1 G of ResNet-50.
    assert model_stats(ResNet50())["multiply_adds"] == 4_089_184_256


def _copy_by_name(source, target):
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def test_keras_applications_equivalence(tmp_path):
    reference = keras.applications.ResNet50(weights=None)
    ours = ResNet50(compat="keras.applications")
    assert [layer.name for layer in ours.layers[1:]] == \
        [layer.name for layer in reference.layers[1:]]
    assert ours.count_params() == reference.count_params() == 25_636_712
    rng = np.random.default_rng(0)
    # Non-trivial BN statistics, so a wrong epsilon or a missing bias would show.
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    _copy_by_name(reference, ours)
    images = rng.uniform(-1, 1, size=(2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(ours(images, training=False), reference(images, training=False),
                               rtol=1e-5, atol=1e-6)
    # keras.applications' published weight files are legacy Keras 2 .h5 files: write one the
    # same way and load it through `weights=`.
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    loaded = ResNet50(compat="keras.applications", weights=str(path))
    np.testing.assert_allclose(loaded(images, training=False), reference(images, training=False),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"is a legacy \.h5 file such as keras\.applications "
                                         r"publishes; model 'resnet18' is not built like"):
        ResNet18(weights=str(path))


@pytest.mark.slow
@pytest.mark.parametrize("constructor,application", [
    (ResNet101, keras.applications.ResNet101), (ResNet152, keras.applications.ResNet152)])
def test_keras_applications_same_layers_for_101_and_152(constructor, application):
    ours, reference = constructor(compat="keras.applications"), application(weights=None)
    assert [(layer.name, [w.shape for w in layer.weights]) for layer in ours.layers[1:]] == \
        [(layer.name, [w.shape for w in layer.weights]) for layer in reference.layers[1:]]


@pytest.mark.parametrize("builder", [
    lambda: CifarResNet(20, input_shape=(8, 8, 1)),
    lambda: CifarResNet(14, stage_models=True, input_shape=(8, 8, 3)),  # nested stage models
    lambda: CifarResNet(11, bottleneck=True, preact=True, input_shape=(8, 8, 3)),
    lambda: ResNet(stage_depths=(1, 1), widths=(8, 16), stem="deep", shortcut="D",
                   input_shape=(32, 32, 3), classes=4),
])
def test_keras_save_load_round_trip(tmp_path, builder):
    model = builder()
    images = np.random.default_rng(1).uniform(0, 1, (2,) + model.input_shape[1:]).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(images, training=False), model(images, training=False),
                               rtol=1e-6, atol=1e-6)


def test_no_top_with_average_pooling_gives_one_feature_vector():
    features = ResNet18(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert features.output.shape == (None, 512)


def test_no_top_accepts_any_image_size():
    spatial = ResNet18(include_top=False)
    assert spatial.input_shape == (None, None, None, 3)
    assert spatial.output.shape == (None, None, None, 512)


def test_no_top_with_max_pooling():
    model = ResNet18(include_top=False, pooling="max", input_shape=(64, 64, 3))
    assert isinstance(model.get_layer("max_pool"), keras.layers.GlobalMaxPooling2D)
    assert model.output.shape == (None, 512)


def test_no_classifier_activation_gives_logits():
    logits = CifarResNet(20, classes=3, classifier_activation=None, input_shape=(8, 8, 1))
    assert logits.get_layer("predictions").activation is keras.activations.linear
    assert logits.output.shape == (None, 3)


def test_input_tensor_becomes_the_model_input():
    tensor = keras.Input((16, 16, 3))
    shared = CifarResNet(8, input_tensor=tensor)
    assert shared.inputs[0] is tensor


def test_shortcut_c_projects_even_the_first_block():
    model = CifarResNet(8, shortcut="C", input_shape=(8, 8, 3))
    assert model.get_layer("conv2_block1_0_conv").kernel.shape == (1, 1, 16, 16)


def test_preact_network_ends_with_batch_norm_and_activation():
    preact = ResNet18(preact=True, input_shape=(64, 64, 3))
    assert preact.name == "preact_resnet18"
    assert [layer.name for layer in preact.layers[-4:-2]] == ["post_bn", "post_relu"]


def test_build_by_name():
    assert build("cifar-plain56", input_shape=(8, 8, 1)).name == "cifar_plain56"


@pytest.mark.parametrize("builder", [
    lambda: CifarResNet(8, input_shape=(8, 8, 1)),
    lambda: CifarResNet(14, stage_models=True, input_shape=(8, 8, 3)),
    lambda: CifarResNet(11, bottleneck=True, preact=True, input_shape=(8, 8, 3),
                        kernel_initializer="HeUniform", weight_decay=1e-4),
    lambda: ResNet(stage_depths=(1, 1), widths=(8, 16), stem="deep", shortcut="D",
                   input_shape=(32, 32, 3), classes=4, activation="leaky_relu"),
])
def test_model_config_round_trips(builder):
    model = builder()
    restored = keras.Model.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
    restored.set_weights(model.get_weights())
    images = np.random.default_rng(2).uniform(0, 1, (2,) + model.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(restored(images, training=False), model(images, training=False),
                               rtol=1e-6, atol=1e-7)


def test_imagenet_weights_download_checks_the_digest(tmp_path, monkeypatch):
    # keras.applications' download path, served from a local file: the right digest gives the
    # cached file, a wrong one an error.
    origin = tmp_path / "origin"
    origin.mkdir()
    payload = b"not really weights, but bytes with a known digest"
    for notop in ("", "_notop"):
        (origin / f"resnet50_weights_tf_dim_ordering_tf_kernels{notop}.h5").write_bytes(payload)
    monkeypatch.setattr(presets, "KERAS_APPLICATIONS_WEIGHTS_URL",
                        origin.as_uri() + "/resnet{depth}_weights_tf_dim_ordering_tf_kernels"
                                          "{notop}.h5")
    monkeypatch.setitem(presets.KERAS_APPLICATIONS_WEIGHTS_MD5, 50,
                        ("0" * 32, hashlib.md5(payload).hexdigest()))
    path = imagenet_weights_path(50, include_top=False, cache_dir=str(tmp_path / "cache"))
    assert pathlib.Path(path).read_bytes() == payload
    assert pathlib.Path(path).parent == tmp_path / "cache" / "models"
    with pytest.raises(ValueError, match="is not keras.applications' file: .*file hash does not "
                                         "match the provided value of 0000"):
        imagenet_weights_path(50, include_top=True, cache_dir=str(tmp_path / "cache"))
    monkeypatch.setitem(presets.KERAS_APPLICATIONS_WEIGHTS_MD5, 101, ("0" * 32, "0" * 32))
    with pytest.raises(OSError, match="could not download file://.*resnet101_weights"):
        imagenet_weights_path(101, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="depth must be one of 50, 101, 152; got 18"):
        imagenet_weights_path(18)


def test_published_digests_are_keras_applications_own():
    assert presets.KERAS_APPLICATIONS_WEIGHTS_MD5[50] == (
        "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626")
    assert set(presets.KERAS_APPLICATIONS_WEIGHTS_MD5) == {50, 101, 152}


@pytest.mark.parametrize("depth,bottleneck,n", [(20, False, 3), (1202, False, 200),
                                                (164, True, 18), (11, True, 1), (8, False, 1)])
def test_cifar_depth_arithmetic(depth, bottleneck, n):
    assert presets.cifar_blocks_per_stage(depth, bottleneck) == n


def test_mixed_precision_keeps_float32_probabilities():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = CifarResNet(8, input_shape=(8, 8, 1))
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert model(np.zeros((1, 8, 8, 1), "float32")).dtype == "float32"


@pytest.mark.slow
def test_resnet1202_builds_and_runs_in_a_plain_process():
    # Default recursion limit, no tricks: the stages are sub-models, so Keras never recurses
    # through ~4,000 layers.
    code = textwrap.dedent("""
        import sys, numpy as np
        from keras_resnet import CifarResNet
        limit = sys.getrecursionlimit()
        from keras_resnet import model_stats
        model = CifarResNet(1202, zero_init_residual=True)
        y = model(np.ones((2, 32, 32, 3), "float32"), training=False)
        assert y.shape == (2, 10) and sys.getrecursionlimit() == limit
        print(model_stats(model)["depth"], sum(int(np.prod(w.shape)) for w in model.trainable_weights))
        print(len(model.layers), sum(len(m.layers) for m in model.layers if hasattr(m, "layers")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    depth, params, top, inner = map(int, result.stdout.split()[-4:])
    assert top < 20 and inner > 4000
    # One build of the biggest net, so the parameter count of Table 6 is checked here too.
    assert depth == 1202 and params == CIFAR_PARAMS[1202]
    assert round(params / 1e6, 1) == presets.PAPER_CIFAR_MEGA_PARAMS[1202]


@pytest.mark.parametrize("call,error,message", [
    (lambda: CifarResNet(21), ValueError, "depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, 1202"),
    (lambda: CifarResNet(26, bottleneck=True), ValueError, "depth must be 9n+2"),
    (lambda: CifarResNet("20"), TypeError, "depth must be a positive int (1, 2, 64, ...); got '20'"),
    (lambda: ResNet(42), ValueError, "depth must be a known ImageNet depth (18, 34, 50, 101, 152"),
    (lambda: ResNet(), ValueError, "pass depth=18|34|50|101|152|200 or stage_depths"),
    (lambda: ResNet(stage_depths=(2, 0)), ValueError,
     "stage_depths[1] must be a positive int (1, 2, 64, ...); got 0"),
    (lambda: ResNet(stage_depths=(2, 2), widths=(8,)), ValueError, "one width per stage (2)"),
    (lambda: ResNet(stage_depths=(2, 2), widths=(8, 0)), ValueError,
     "widths[1] must be a positive int"),
    (lambda: ResNet18(input_shape=(16, 16, 3)), ValueError,
     "height 16 is too small; this network downsamples by 32"),
    (lambda: CifarResNet(20, input_shape=(2, 8, 1)), ValueError, "must be >= 4"),
    (lambda: ResNet18(input_shape=(224, 224)), ValueError, "input_shape must be (height, width"),
    (lambda: ResNet18(classes=0), ValueError, "classes must be a positive int (1, 2, 64, ...); got 0"),
    (lambda: ResNet18(classes=2.0), TypeError, "classes must be a positive int"),
    (lambda: ResNet18(pooling="mean"), ValueError,
     "pooling must be one of None, 'avg', 'max'; got 'mean'"),
    (lambda: ResNet18(classifier_activation="softmaxx"), ValueError,
     "classifier_activation must be a Keras activation: a name such as 'relu' or 'leaky_relu', "
     "or a callable or None; got 'softmaxx'"),
    (lambda: ResNet18(weights="imagenet"), ValueError, "needs compat='keras.applications'"),
    (lambda: ResNet18(weights="/no/such/file.h5"), ValueError, "does not exist"),
    (lambda: ResNet18(compat="keras.applications"), ValueError,
     "compat='keras.applications' reproduces"),
    (lambda: ResNet50(compat="timm"), ValueError,
     "compat must be one of None, 'keras.applications'; got 'timm'"),
    (lambda: ResNet50(compat="keras.applications", weights="imagenet", classes=10), ValueError,
     "needs classes=1000"),
    (lambda: ResNet18(stem="vgg"), ValueError,
     "stem must be one of 'imagenet', 'cifar', 'deep'; got 'vgg'"),
    (lambda: ResNet18(shortcut="identity"), ValueError, "shortcut='identity' needs matching"),
    (lambda: ResNet18(plain="yes"), TypeError, "plain must be True or False"),
    (lambda: ResNet18(kernel_initializer="kaiming"), ValueError,
     "kernel_initializer must be a Keras initializer: a name such as 'he_normal' or 'HeNormal'"),
    (lambda: ResNet18(momentum=1.0), ValueError, "momentum must be a number in [0, 1); got 1.0"),
    (lambda: ResNet("50"), TypeError, "depth must be a positive int (1, 2, 64, ...); got '50'"),
    (lambda: CifarResNet(20, bottleneck=1), TypeError, "bottleneck must be True or False; got 1"),
    (lambda: build("resnet51"), ValueError,
     "unknown model 'resnet51'; model_name must be one of: resnet18, resnet34"),
    (lambda: build(50), TypeError, "model_name must be a model name (a str); got 50"),
])
def test_bad_model_arguments(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_summary_cli(capsys):
    assert main(["summary", "cifar-resnet20", "resnet18"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["cifar-resnet20"][1:3] == ["20", "269,722"]
    assert lines["resnet18"][1:5] == ["18", "11,689,512", "11,699,112", "1.81"]
    assert main(["summary", "resnet51"]) == 2
    assert "unknown model 'resnet51'" in capsys.readouterr().err
