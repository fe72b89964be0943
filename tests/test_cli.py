"""The command line: parsing loads neither TensorFlow nor Keras, TensorFlow's log lines stay
hidden unless asked for, and messages name flags and paths."""

import json
import os
import subprocess
import sys

import pytest

from keras_resnet import constants
from keras_resnet.cli import COMMANDS, as_flags, build_parser, flag_names, main
from keras_resnet.cli.quiet import without_noise

FIXTURES = "/work/shared/fixtures/torchvision"


def _python(*arguments, timeout=300):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_RESNET_VERBOSE")}
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ----------------------------------------------------------------------------- start-up

_PARSE_EVERYTHING = """
import json, sys
from keras_resnet.cli import COMMANDS, main
codes = {}
for argv in [["--help"], *([command, "--help"] for command in COMMANDS),
             ["train", "--epochs", "x"], ["bogus"], []]:
    try:
        main(argv)
    except SystemExit as exit_:
        codes[" ".join(argv)] = exit_.code
heavy = sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_help_and_argument_errors_import_neither_tensorflow_nor_keras():
    result = _python("-c", _PARSE_EVERYTHING)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["heavy"] == []
    assert report["codes"] == {"--help": 0, **{f"{c} --help": 0 for c in COMMANDS},
                               "train --epochs x": 2, "bogus": 2, "": 2}


def test_python_dash_m_help_imports_neither_tensorflow_nor_keras():
    result = _python("-X", "importtime", "-m", "keras_resnet", "--help")
    assert result.returncode == 0
    assert "usage: keras-resnet [-h] [--verbose] COMMAND ..." in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "keras_resnet.cli" in imported
    assert not {"tensorflow", "keras", "keras_resnet.modeling"} & imported


def test_a_plain_import_registers_the_layers_when_keras_comes_later():
    code = ("import sys, keras_resnet; light = 'keras' not in sys.modules; import keras; "
            "print(light, keras.saving.get_registered_object('keras_resnet>ZeroPadShortcut') "
            "is not None)")
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_the_parser_names_are_the_presets_names():
    from keras_resnet.modeling import presets

    assert constants.MODEL_NAMES == tuple(presets.MODEL_PRESETS)
    assert constants.RECIPE_NAMES == tuple(presets.RECIPES)


def test_every_command_is_registered_in_order():
    parser = build_parser()
    assert tuple(parser.commands) == COMMANDS
    assert "manifest" in COMMANDS


# ----------------------------------------------------------------------------- quiet

@pytest.mark.slow
def test_a_command_prints_no_tensorflow_log_lines(tmp_path):
    result = _python("-m", "keras_resnet", "summary", "cifar-resnet20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == ["cifar-resnet20", "20"]
    assert result.stderr == ""


def test_verbose_leaves_tensorflow_logging_alone(monkeypatch, capsys):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("KERAS_RESNET_VERBOSE", raising=False)
    assert main(["--verbose", "summary", "resnet51"]) == 2
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("KERAS_RESNET_VERBOSE", "1")
    assert main(["summary", "resnet51"]) == 2
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("KERAS_RESNET_VERBOSE", "0")
    assert main(["summary", "resnet51"]) == 2
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def test_only_tensorflows_load_time_lines_are_dropped():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR\n"
            "I0000 00:00:1796467080.792763   17869 port.cc:153] oneDNN custom operations are on.\n"
            "E0000 00:00:1796467502.622238   25731 cuda_platform.cc:52] failed call to cuInit\n"
            "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
            "TensorFlow with the appropriate compiler flags.\n"
            "F0000 00:00:1.0   1 x.cc:1] a fatal error stays\n"
            "/path/x.py:3: UserWarning: a Python warning stays\n")
    assert without_noise(text) == ("F0000 00:00:1.0   1 x.cc:1] a fatal error stays\n"
                                    "/path/x.py:3: UserWarning: a Python warning stays\n")


# ----------------------------------------------------------------------------- messages

@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0"],
     "--batch-size must be a positive int (1, 2, 64, ...); got 0"),
    (["tune", "--max-trials", "0"], "--max-trials must be a positive int (1, 2, 64, ...); got 0"),
    (["manifest", "job", "--workers", "0"],
     "--workers must be a positive int (1, 2, 64, ...); got 0"),
    (["manifest", "job", "--gpus-per-worker", "-1"], "--gpus-per-worker must be an int >= 0; "
                                                     "got -1"),
    (["manifest", "job", "--out", "/proc/no-such-dir/job.yaml"],
     "--out /proc/no-such-dir/job.yaml: No such file or directory: /proc/no-such-dir"),
])
def test_errors_name_the_flags(argv, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"keras-resnet {argv[0]}: error: {message}\n"


def test_library_names_become_flags_only_where_they_are_arguments():
    names = flag_names(build_parser().commands["train"])
    assert names["learning_rate"] == "--lr" and names["out_dir"] == "--out"
    assert as_flags("give warmup_steps or warmup_epochs, not both; got warmup_steps=3, "
                    "warmup_epochs=1", names) == (
        "give --warmup-steps or --warmup-epochs, not both; got --warmup-steps=3, "
        "--warmup-epochs=1")
    assert as_flags("pass a smaller warmup_epochs (--warmup-epochs)", names) == (
        "pass a smaller --warmup-epochs")
    assert as_flags("num_classes is 4; drop num_classes (--num-classes) or pass "
                    "num_classes (--num-classes N)", names) == (
        "--num-classes is 4; drop --num-classes or pass --num-classes N")
    assert as_flags("learning_rate must be > 0; got 0.0", names) == "--lr must be > 0; got 0.0"
    # plain words stay words unless they open a "... must ..." sentence
    assert as_flags("the model has 3 epochs of data; model must be one of: a, b", names) == (
        "the model has 3 epochs of data; --model must be one of: a, b")
    assert as_flags("it needs weights=PATH; got no weights", names) == (
        "it needs --weights=PATH; got no weights")
    assert as_flags("file 'batch_size' and model.batch_size", names) == (
        "file 'batch_size' and model.batch_size")


def test_predict_on_a_directory_says_so(tmp_path, capsys):
    assert main(["predict", "--model", "m", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"keras-resnet predict: error: IMAGE {str(tmp_path)!r} is a directory; give image "
        f"files (JPEG, PNG, BMP or GIF), e.g. {tmp_path}/*.jpg\n")


def test_one_epoch_is_singular():
    from keras_resnet.cli.train import _count

    assert (_count(1, "epoch"), _count(2, "epoch")) == ("1 epoch", "2 epochs")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="no torchvision fixtures")
def test_convert_names_the_model_after_the_checkpoint_and_counts_tensors(tmp_path, capsys):
    import keras

    out = str(tmp_path / "converted.keras")
    assert main(["convert", f"{FIXTURES}/tv_resnet18.safetensors", "--out", out,
                 "--classes", "5", "--input-shape", "64,64,3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(
        "loaded 120 of the checkpoint's 122 tensors into 100 weights of model 'tv_resnet18' "
        "(num_batches_tracked counters have no Keras weight); ")
    assert lines[2] == "skipped fc.weight, fc.bias: a new 5-class head"
    assert keras.models.load_model(out).name == "tv_resnet18"


def test_the_old_manifest_module_says_where_the_command_went():
    result = _python("-m", "keras_resnet.distribute.manifest", "job")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("python -m keras_resnet.distribute.manifest is now `keras-resnet "
                             "manifest` (the same arguments)\n")
