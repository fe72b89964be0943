"""`keras-resnet convert`: a torchvision checkpoint to a .keras file, and its bad inputs."""

import os

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_resnet
from keras_resnet.cli import main
from pretrained_helpers import randomize_batch_norm, torch_state_dict


@pytest.fixture
def checkpoint(tmp_path):
    model = keras_resnet.ResNet(stage_depths=(1, 1, 1, 1), widths=(8, 16, 16, 32),
                                input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    randomize_batch_norm(model)
    path = str(tmp_path / "tiny.safetensors")
    save_file(torch_state_dict(model), path)
    return model, path


def test_convert_writes_a_model_taking_raw_pixels(tmp_path, checkpoint, capsys):
    original, source = checkpoint
    out = str(tmp_path / "out" / "tiny.keras")
    assert main(["convert", source, "--out", out, "--input-shape", "32,32,3", "--classes", "4"]) \
        == 0
    printed = capsys.readouterr().out
    assert "basic blocks, stage_depths (1, 1, 1, 1), widths (8, 16, 16, 32), stem=imagenet, " \
           "shortcut=auto, classes 10" in printed
    assert "skipped fc.weight, fc.bias: a new 4-class head" in printed
    assert f"wrote {out}" in printed
    assert os.listdir(os.path.dirname(out)) == ["tiny.keras"]
    model = keras.models.load_model(out)
    assert model.output_shape == (None, 4)
    assert model.layers[1].name == "torch_preprocessing"
    np.testing.assert_array_equal(model.get_layer("conv4_block1_2_conv").kernel.numpy(),
                                  original.get_layer("conv4_block1_2_conv").kernel.numpy())


@pytest.mark.parametrize("arguments, message", [
    (["missing.safetensors", "--out", "m.keras"],
     "checkpoint 'missing.safetensors' does not exist"),
    (["{src}", "--out", "m.h5"], "--out must name a .keras file; got 'm.h5'"),
    (["weights.npz", "--out", "m.keras"], "SRC must be a torch checkpoint (.safetensors, .pth, "
                                          ".pt, .bin); got 'weights.npz'"),
    (["{src}", "--out", "m.keras", "--input-shape", "32,32"],
     "--input-shape must be H,W,C with three positive ints (e.g. 224,224,3); got '32,32'"),
    (["{src}", "--out", "m.keras", "--classes", "0"], "--classes must be an int >= 1; got 0"),
    (["{pth}", "--out", "m.keras"], "needs PyTorch, which is not installed"),
])
def test_convert_bad_input_exits_2_with_one_line(tmp_path, checkpoint, capsys, monkeypatch,
                                                 arguments, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    (tmp_path / "r.pth").write_bytes(b"x")
    arguments = [a.format(src=checkpoint[1], pth="r.pth") for a in arguments]
    assert main(["convert", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-resnet convert: error: ") and err.count("\n") == 1
    assert message in err
    assert not os.path.exists(tmp_path / "m.keras")
