"""The package surface: every public name resolves, and importing it stays light."""

import subprocess
import sys

import keras_resnet


def test_every_public_name_resolves():
    for name in keras_resnet.__all__:
        assert getattr(keras_resnet, name) is not None, name
    assert "residual_block" in dir(keras_resnet)


def test_import_and_help_do_not_load_tensorflow():
    code = ("import sys, keras_resnet; from keras_resnet.cli import build_parser; build_parser(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_unknown_attribute_is_an_attribute_error():
    try:
        keras_resnet.ResNet42
    except AttributeError as error:
        assert "ResNet42" in str(error)
    else:
        raise AssertionError("keras_resnet.ResNet42 should not exist")
