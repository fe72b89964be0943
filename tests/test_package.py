"""The package surface: every public name resolves, and importing it stays light."""

import json
import os
import subprocess
import sys

import pytest

import keras_resnet


def test_every_public_name_resolves():
    for name in keras_resnet.__all__:
        assert getattr(keras_resnet, name) is not None, name
    assert "residual_block" in dir(keras_resnet)


def test_a_saved_model_loads_after_a_plain_import(tmp_path):
    # The custom layer (option-A shortcut) and the schedule must be registered by the import
    # alone, without touching keras_resnet.modeling.models or keras_resnet.training first.
    from keras_resnet import CifarResNet, PaperSchedule, compile_model

    model = CifarResNet(8, input_shape=(8, 8, 1))
    compile_model(model, learning_rate=PaperSchedule(0.1, total_steps=10))
    path = tmp_path / "model.keras"
    model.save(path)
    code = ("import keras, keras_resnet, sys; "
            f"m = keras.models.load_model({str(path)!r}); "
            "print(m.get_layer('conv3_block1_0_pad').__class__.__name__, "
            "'keras_resnet.training' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ZeroPadShortcut", "False"]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'keras_resnet' has no attribute 'ResNet42'"):
        keras_resnet.ResNet42


@pytest.mark.slow
def test_import_leaves_the_environment_alone():
    # A fresh process without TF_CPP_MIN_LOG_LEVEL: the environment after TensorFlow and Keras
    # have loaded (they set a few variables of their own) must be the environment after every
    # keras_resnet module has loaded too, and the library never sets the CLI's "2".
    code = ("import json, os, keras, tensorflow; before = dict(os.environ); "
            "import keras_resnet; [getattr(keras_resnet, n) for n in keras_resnet.__all__]; "
            "after = dict(os.environ); import sys; "
            "print(json.dumps({'changed': sorted(set(after.items()) ^ set(before.items())), "
            "'tf_cpp': after.get('TF_CPP_MIN_LOG_LEVEL'), 'jax': 'jax' in sys.modules}))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Keras imports JAX where it is installed (`.[all]`), and JAX sets its own default, "1".
    assert report == {"changed": [], "tf_cpp": "1" if report["jax"] else None,
                      "jax": report["jax"]}


def test_the_cli_quiets_tensorflow_for_its_own_process(monkeypatch, capsys):
    from keras_resnet.cli import main

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert main(["summary", "resnet51"]) == 2
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


# ----------------------------------------------------------------------------- packaging

def _pyproject():
    import tomllib

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_the_core_installs_without_tensorflow():
    project = _pyproject()
    names = [d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
             for d in project["dependencies"]]
    assert names == ["keras", "numpy", "safetensors"]
    extras = project["optional-dependencies"]
    assert sorted(extras) == ["all", "dev", "docs", "jax", "tensorflow", "torch"]
    assert any(d.startswith("mkdocs-material") for d in extras["docs"])
    assert "tensorflow==2.21.0" in extras["tensorflow"]
    assert "tensorflow-serving-api==2.21.0" in extras["tensorflow"]
    assert "keras-tuner==1.4.8" in extras["tensorflow"]
    assert extras["all"] == ["keras_resnet[tensorflow,jax]"]


def test_make_installs_every_backend_ci_tests():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "Makefile")) as f:
        makefile = f.read()
    # the docs extra too: the suite builds the site (tests/test_docs.py)
    assert '-e ".[all,dev,docs]"' in makefile
