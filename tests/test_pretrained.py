"""torchvision / timm checkpoints -> keras_resnet models: real torchvision logits, round trips
through safetensors for other architectures, and every way a checkpoint can fail to fit."""

import logging
import os
import sys
import warnings

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_resnet
from keras_resnet.modeling import (TorchResNet, from_torch_checkpoint, infer_architecture,
                                   load_torch_weights, load_weights, read_state_dict)
from pretrained_helpers import randomize_batch_norm, torch_state_dict

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir,
                        "shared", "fixtures", "torchvision")
SMALL = dict(widths=(8, 16, 16, 32), input_shape=(32, 32, 3), classes=10,
             classifier_activation=None)


def fixture(name):
    path = os.path.join(FIXTURES, name)
    assert os.path.isfile(path), f"torchvision fixtures missing: {path} (shared/ beside the repo)"
    return path


def small_model(stage_depths=(1, 2, 1, 1), bottleneck=False, **options):
    model = keras_resnet.ResNet(stage_depths=stage_depths, bottleneck=bottleneck,
                                **{**SMALL, **options})
    randomize_batch_norm(model)
    return model


def write_checkpoint(tmp_path, model, avg_down=False, edit=None, name="model.safetensors"):
    state = torch_state_dict(model, avg_down=avg_down)
    if edit:
        edit(state)
    path = str(tmp_path / name)
    save_file(state, path)
    return path


def images(shape=(32, 32, 3), n=2, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype("float32")


# ------------------------------------------------------------------ real torchvision logits


@pytest.mark.parametrize("stem", ["tv_resnet18", "tv_bottleneck_1111"])
def test_torchvision_fixture_logits_are_reproduced(stem):
    path = fixture(f"{stem}.safetensors")
    model = from_torch_checkpoint(path, input_shape=(64, 64, 3), classifier_activation=None)
    inputs = np.load(fixture(f"{stem}_inputs_nchw.npy")).transpose(0, 2, 3, 1)
    expected = np.load(fixture(f"{stem}_logits.npy"))
    logits = model.predict(inputs, verbose=0)
    assert logits.shape == expected.shape == (2, 10)
    assert np.max(np.abs(logits - expected)) < 1e-4
    assert set(model.pretrained_load.loaded) == set(read_state_dict(path))
    assert model.pretrained_load.skipped == ()


def test_architecture_is_read_from_the_fixtures():
    resnet18 = infer_architecture(read_state_dict(fixture("tv_resnet18.safetensors")))
    assert resnet18 == TorchResNet(stage_depths=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                                   bottleneck=False, expansion=4, stem="imagenet",
                                   shortcut="auto", channels=3, classes=10)
    bottleneck = infer_architecture(read_state_dict(fixture("tv_bottleneck_1111.safetensors")))
    assert (bottleneck.stage_depths, bottleneck.bottleneck, bottleneck.expansion) == \
        ((1, 1, 1, 1), True, 4)


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("bottleneck", [False, True], ids=["basic", "bottleneck"])
@pytest.mark.parametrize("resnet_d", [False, True], ids=["torchvision", "timm-resnet-d"])
def test_generated_checkpoints_convert_back_to_identical_outputs(tmp_path, bottleneck, resnet_d):
    options = dict(stem="deep", shortcut="D") if resnet_d else {}
    original = small_model(bottleneck=bottleneck, **options)
    path = write_checkpoint(tmp_path, original, avg_down=resnet_d)
    converted = from_torch_checkpoint(path, input_shape=(32, 32, 3), classifier_activation=None)
    x = images()
    np.testing.assert_allclose(converted.predict(x, verbose=0), original.predict(x, verbose=0),
                               rtol=0, atol=1e-5)
    architecture = infer_architecture(read_state_dict(path))
    assert architecture.stage_depths == (1, 2, 1, 1)
    assert (architecture.stem, architecture.shortcut) == \
        (("deep", "D") if resnet_d else ("imagenet", "auto"))


def test_timm_resnet_d_key_names(tmp_path):
    """A deep-stem, avg-down bottleneck reads the keys timm's resnet50d state_dict has."""
    model = small_model(stage_depths=(1, 1), widths=(8, 16), bottleneck=True, stem="deep",
                        shortcut="D")
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    timm_keys = {"conv1.0.weight", "conv1.3.weight", "conv1.6.weight", "fc.weight", "fc.bias"}
    timm_keys |= {f"{p}.{k}" for p in ("conv1.1", "conv1.4", "bn1") for k in bn}
    for stage in (1, 2):
        prefix = f"layer{stage}.0"
        timm_keys |= {f"{prefix}.conv{j}.weight" for j in (1, 2, 3)}
        timm_keys |= {f"{prefix}.bn{j}.{k}" for j in (1, 2, 3) for k in bn}
        timm_keys |= {f"{prefix}.downsample.1.weight"}
        timm_keys |= {f"{prefix}.downsample.2.{k}" for k in bn}
    path = write_checkpoint(tmp_path, model, avg_down=True)
    assert set(read_state_dict(path)) == timm_keys
    loaded = from_torch_checkpoint(path, input_shape=(32, 32, 3), classifier_activation=None)
    assert set(loaded.pretrained_load.loaded) == timm_keys
    x = images()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_load_into_a_model_you_built_and_wider_bottlenecks(tmp_path):
    original = small_model(stage_depths=(1, 1), widths=(8, 16), bottleneck=True, expansion=2)
    path = write_checkpoint(tmp_path, original)
    assert infer_architecture(read_state_dict(path)).expansion == 2
    target = keras_resnet.ResNet(stage_depths=(1, 1), bottleneck=True, expansion=2,
                                 stage_models=True, **{**SMALL, "widths": (8, 16)})
    result = load_torch_weights(target, path)
    assert result.format == "torch" and result.skipped == ()
    x = images()
    np.testing.assert_allclose(target.predict(x, verbose=0), original.predict(x, verbose=0),
                               atol=1e-5)


def test_another_number_of_classes_loads_everything_but_fc(tmp_path, caplog):
    original = small_model()
    path = write_checkpoint(tmp_path, original)
    with caplog.at_level(logging.INFO, logger="keras_resnet.modeling"):
        model = from_torch_checkpoint(path, input_shape=(32, 32, 3), classes=3)
    assert model.pretrained_load.skipped == ("fc.weight", "fc.bias")
    assert "skipped fc.weight, fc.bias" in caplog.text
    assert model.output_shape == (None, 3)
    for name in ("conv1_conv", "conv3_block2_2_bn", "conv5_block1_0_conv"):
        for ours, theirs in zip(model.get_layer(name).weights,
                                original.get_layer(name).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(model.predict(images(), verbose=0).sum(axis=1), 1.0, atol=1e-5)


def test_headless_checkpoint_gives_a_pooled_backbone(tmp_path):
    path = write_checkpoint(tmp_path, small_model(),
                            edit=lambda s: [s.pop("fc.weight"), s.pop("fc.bias")])
    model = from_torch_checkpoint(path, input_shape=(32, 32, 3))
    assert model.output_shape == (None, 32)


def test_torch_preprocessing_takes_raw_pixels(tmp_path):
    original = small_model()
    path = write_checkpoint(tmp_path, original)
    model = from_torch_checkpoint(path, input_shape=(32, 32, 3), classifier_activation=None,
                                  preprocessing="torch")
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    normalized = (pixels / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224,
                                                                              0.225])
    np.testing.assert_allclose(model.predict(pixels, verbose=0),
                               original.predict(normalized.astype("float32"), verbose=0),
                               atol=1e-4)
    saved = str(tmp_path / "converted.keras")
    model.save(saved)
    reloaded = keras.models.load_model(saved)
    np.testing.assert_allclose(reloaded.predict(pixels, verbose=0),
                               model.predict(pixels, verbose=0), atol=1e-6)


# ------------------------------------------------------------------ errors


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def _assert_unchanged(model, before):
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({"layer1.0.extra.weight": np.zeros(3, "float32")}),
     r"checkpoint keys 'layer1\.0\.extra\.weight' match no layer of model 'resnet'"),
    (lambda s: s.pop("layer2.0.bn1.running_var"),
     r"layer 'conv3_block1_1_bn' weight 'moving_variance' has no checkpoint key "
     r"'layer2\.0\.bn1\.running_var'"),
    (lambda s: s.update({"layer2.1.bn2.weight": np.ones(17, "float32")}),
     r"checkpoint key 'layer2\.1\.bn2\.weight' of shape \(17,\) does not fit layer "
     r"'conv3_block2_2_bn' weight 'gamma' of shape \(16,\)"),
    (lambda s: s.update({"layer3.0.conv1.weight": np.ones((16, 16, 3, 5), "float32")}),
     r"checkpoint key 'layer3\.0\.conv1\.weight' of shape \(16, 16, 3, 5\) does not fit layer "
     r"'conv4_block1_1_conv' weight 'kernel' of shape \(3, 3, 16, 16\)"),
    (lambda s: s.update({"fc.weight": np.ones(10, "float32")}),
     r"checkpoint key 'fc\.weight' of shape \(10,\) does not fit layer 'predictions' weight "
     r"'kernel' of shape \(32, 10\)"),
], ids=["unused-key", "missing-key", "bn-shape", "conv-shape", "fc-rank"])
def test_a_checkpoint_that_does_not_fit_loads_nothing(tmp_path, edit, message):
    path = write_checkpoint(tmp_path, small_model(), edit=edit)
    target = keras_resnet.ResNet(stage_depths=(1, 2, 1, 1), **SMALL)
    before = _weights(target)
    with pytest.raises(ValueError, match=message):
        load_torch_weights(target, path)
    _assert_unchanged(target, before)


@pytest.mark.parametrize("options, message", [
    (dict(stage_depths=(1, 1, 1, 1)),
     r"checkpoint stage layer2 has 2 blocks but model 'resnet' stage conv3 has 1 \(checkpoint "
     r"stage_depths \(1, 2, 1, 1\), model \(1, 1, 1, 1\)\)"),
    (dict(stage_depths=(1, 2, 1)),
     r"checkpoint stage layer4 has 1 blocks but model 'resnet' stage conv5 has 0"),
    (dict(stage_depths=(1, 2, 1, 1), bottleneck=True),
     r"checkpoint has bottleneck=False but model 'resnet' was built with bottleneck=True"),
    (dict(stage_depths=(1, 2, 1, 1), stem="deep"),
     r"checkpoint has stem='imagenet' but model 'resnet' was built with stem='deep'"),
    (dict(stage_depths=(1, 2, 1, 1), epsilon=1e-3),
     r"layer 'conv1_bn' has BatchNormalization epsilon 0\.001; torch checkpoints need "
     r"epsilon=1e-05"),
    (dict(stage_depths=(1, 2, 1, 1), preact=True),
     r"layer 'conv2_block1_preact_bn' of model 'resnet' has no torchvision/timm counterpart"),
], ids=["depth", "stages", "block-kind", "stem", "epsilon", "preact"])
def test_a_checkpoint_for_another_architecture_says_where(tmp_path, options, message):
    path = write_checkpoint(tmp_path, small_model())
    widths = SMALL["widths"][:len(options["stage_depths"])]
    target = keras_resnet.ResNet(**{**SMALL, "widths": widths, "name": "resnet", **options})
    with pytest.raises(ValueError, match=message):
        load_torch_weights(target, path)


def test_stride_on_the_1x1_is_refused(tmp_path):
    path = write_checkpoint(tmp_path, small_model(bottleneck=True))
    target = keras_resnet.ResNet(stage_depths=(1, 2, 1, 1), bottleneck=True, stride_on="1x1",
                                 **SMALL)
    with pytest.raises(ValueError, match=r"layer 'conv3_block1_1_conv' strides in the 1x1 "
                                         r"convolution; .* build with stride_on='3x3'"):
        load_torch_weights(target, path)


def test_bad_files(tmp_path, monkeypatch):
    other = tmp_path / "weights.npz"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"checkpoint '.*weights\.npz' must be a \.safetensors "
                                         r"file or a torch pickle \(\.pth, \.pt, \.bin\)"):
        from_torch_checkpoint(str(other))
    with pytest.raises(ValueError, match=r"checkpoint '.*absent\.safetensors' does not exist"):
        from_torch_checkpoint(str(tmp_path / "absent.safetensors"))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"is not a readable safetensors file"):
        read_state_dict(str(broken))
    pickle = tmp_path / "resnet18.pth"
    pickle.write_bytes(b"\x80\x02}q\x00.")
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    with pytest.raises(ImportError, match=r"reading '.*resnet18\.pth' needs PyTorch, which is "
                                          r"not installed: install the optional extra "
                                          r"\(pip install -e '\.\[torch\]' in this checkout"):
        from_torch_checkpoint(str(pickle))


def test_checkpoints_keras_resnet_cannot_build(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"features.0.weight": np.zeros((8, 3, 3, 3), "float32")}, path)
    with pytest.raises(ValueError, match=r"not a torchvision/timm ResNet state_dict: it has "
                                         r"neither 'conv1\.weight' nor 'conv1\.0\.weight' "
                                         r"\(keys: features\.0\.weight, \.\.\.\)"):
        from_torch_checkpoint(path)

    def group(state):
        state["layer2.0.conv2.weight"] = state["layer2.0.conv2.weight"][:, :4]

    path = write_checkpoint(tmp_path, small_model(), edit=group, name="resnext.safetensors")
    with pytest.raises(ValueError, match=r"checkpoint key 'layer2\.0\.conv2\.weight' has shape "
                                         r"\(16, 4, 3, 3\): a grouped convolution \(ResNeXt\)"):
        from_torch_checkpoint(path)


@pytest.mark.parametrize("arguments, error, message", [
    (dict(classes=0), ValueError, r"classes must be None \(the checkpoint's\) or an int >= 1; "
                                  r"got 0"),
    (dict(preprocessing="caffe"), ValueError, r"preprocessing must be one of \(None, 'torch'\); "
                                              r"got 'caffe'"),
    (dict(input_shape=(32, 32)), ValueError, r"input_shape must be \(height, width, channels\)"),
])
def test_bad_arguments_come_before_reading(tmp_path, arguments, error, message):
    with pytest.raises(error, match=message):
        from_torch_checkpoint(str(tmp_path / "absent.safetensors"), **arguments)


# ------------------------------------------------------------------ load_weights


@pytest.mark.slow
def test_load_weights_dispatches_on_the_file_type(tmp_path):
    original = small_model()
    torch_path = write_checkpoint(tmp_path, original)
    target = keras_resnet.ResNet(stage_depths=(1, 2, 1, 1), **SMALL)
    assert load_weights(target, torch_path).format == "torch"
    x = images()
    np.testing.assert_allclose(target.predict(x, verbose=0), original.predict(x, verbose=0),
                               atol=1e-5)
    for filename in ("saved.keras", "saved.weights.h5"):
        path = str(tmp_path / filename)
        original.save(path) if filename.endswith(".keras") else original.save_weights(path)
        fresh = keras_resnet.ResNet(stage_depths=(1, 2, 1, 1), **SMALL)
        assert load_weights(fresh, path).format == "keras"
        np.testing.assert_allclose(fresh.predict(x, verbose=0), original.predict(x, verbose=0),
                                   atol=1e-6)
    legacy = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    legacy.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is a legacy \.h5 file such as keras\.applications "
                                         r"publishes; model 'resnet' is not built like keras\."
                                         r"applications: load it into keras_resnet\.ResNet50/101/"
                                         r"152\(compat='keras\.applications', weights=PATH\)"):
        load_weights(target, str(legacy))
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(ValueError, match=r"weights file '.*weights\.txt' must end with one of "
                                         r"\.safetensors, \.pth, \.pt, \.bin, \.keras, "
                                         r"\.weights\.h5, \.h5"):
        load_weights(target, str(text))
    with pytest.raises(ValueError, match=r"weights file '.*absent\.keras' does not exist"):
        load_weights(target, str(tmp_path / "absent.keras"))
    other = keras_resnet.ResNet(stage_depths=(1, 1, 1, 1), **SMALL)
    with pytest.raises(ValueError, match=r"weights file '.*saved\.keras' \(\.keras model\) does "
                                         r"not fit model 'resnet'"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras' own notes on the layers it skips
        load_weights(other, str(tmp_path / "saved.keras"))


def _damaged_keras_files(tmp_path):
    """A real ``.keras`` file cut in half, and one whose weights member has zeroed bytes."""
    import zipfile

    model = keras_resnet.ResNet(stage_depths=(1, 1, 1, 1), widths=(4, 8, 8, 8),
                                input_shape=(32, 32, 3), classes=3)
    whole = tmp_path / "whole.keras"
    model.save(str(whole))
    data = whole.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[:len(data) // 2])
    with zipfile.ZipFile(whole) as archive:
        member = next(i for i in archive.infolist() if i.filename.endswith(".h5"))
    start = member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    damaged = bytearray(data)
    damaged[start:start + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(bytes(damaged))
    return model, str(cut), str(corrupt)


def test_a_cut_or_corrupt_keras_file_is_named_not_a_bad_zip(tmp_path):
    model, cut, corrupt = _damaged_keras_files(tmp_path)
    with pytest.raises(ValueError, match=r"^weights file '.*cut\.keras' is not a readable "
                                         r"\.keras \(zip\) file; it may be cut short \(an "
                                         r"interrupted download or copy\): save or copy it again$"):
        load_weights(model, cut)
    with pytest.raises(ValueError, match=r"^weights file '.*corrupt\.keras' is not a readable "
                                         r"\.keras \(zip\) file; it may be cut short or corrupt "
                                         r"\(Bad CRC-32 for file 'model\.weights\.h5'\): save or "
                                         r"copy it again$"):
        load_weights(model, corrupt)
    with pytest.raises(ValueError, match=r"^weights file '.*cut\.keras' is not a readable "):
        keras_resnet.ResNet(stage_depths=(1, 1, 1, 1), widths=(4, 8, 8, 8),
                            input_shape=(32, 32, 3), classes=3, weights=cut)


def test_the_cli_names_a_cut_keras_file_in_one_line(tmp_path, capsys):
    from keras_resnet.cli import main

    _, cut, _ = _damaged_keras_files(tmp_path)
    status = main(["train", "--weights", cut, "--epochs", "1", "--out", str(tmp_path / "runs"),
                   "--no-export", "--verbose", "0"])
    assert status == 2
    err = capsys.readouterr().err
    assert f"weights file {cut!r} is not a readable .keras (zip) file; it may be cut short" in err
    assert "Traceback" not in err and "BadZipFile" not in err


def test_caffe_preprocessing_matches_keras_applications(tmp_path):
    from keras_resnet.modeling import caffe_preprocessing

    pixels = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, caffe_preprocessing()(inputs))
    expected = keras.applications.resnet.preprocess_input(pixels.copy())
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-4)
    assert model.trainable_weights == []
    path = str(tmp_path / "caffe.keras")
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(pixels, verbose=0),
                               expected, atol=1e-4)


def test_torch_pickles_read_like_safetensors(tmp_path):
    """Only where the optional torch extra is installed (it is not needed for .safetensors)."""
    torch = pytest.importorskip("torch")
    state = read_state_dict(fixture("tv_bottleneck_1111.safetensors"))
    tensors = {f"module.{key}": torch.from_numpy(value) for key, value in state.items()}
    path = str(tmp_path / "wrapped.pth")
    torch.save({"state_dict": tensors, "epoch": 3}, path)
    again = read_state_dict(path)
    assert set(again) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(again[key], value)
