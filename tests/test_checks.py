"""The shared argument checks and atomic writes: one exception type and message shape per bad value."""

import os
import subprocess
import sys

import pytest

from keras_resnet import checks, files


@pytest.mark.parametrize("value, error", [(2.0, TypeError), (True, TypeError), ("2", TypeError),
                                          (None, TypeError), (0, ValueError), (-3, ValueError)])
def test_positive_int_rejects(value, error):
    with pytest.raises(error) as info:
        checks.positive_int(value, "batch_size")
    assert str(info.value) == f"batch_size must be a positive int (1, 2, 64, ...); got {value!r}"


def test_positive_int_message_names_argument_and_value():
    with pytest.raises(TypeError) as info:
        checks.positive_int(2.0, "epochs")
    assert str(info.value) == "epochs must be a positive int (1, 2, 64, ...); got 2.0"
    with pytest.raises(ValueError) as info:
        checks.positive_int(5, "top_k", maximum=3)
    assert str(info.value) == "top_k must be an int in [1, 3]; got 5"


def test_positive_int_accepts_numpy_integers():
    np = pytest.importorskip("numpy")
    assert checks.positive_int(np.int64(4), "n") == 4
    assert type(checks.positive_int(np.int64(4), "n")) is int


@pytest.mark.parametrize("value, error", [(1.0, ValueError), (-0.1, ValueError),
                                          (float("nan"), ValueError), ("0.1", TypeError),
                                          (False, TypeError)])
def test_fraction_rejects(value, error):
    with pytest.raises(error, match=r"^validation_split must be a number in \[0, 1\); got "):
        checks.fraction(value, "validation_split")


def test_number_bounds_text():
    with pytest.raises(ValueError, match=r"^lr must be a number > 0 \(e\.g\. 0\.1\); got 0\.0$"):
        checks.positive_number(0.0, "lr", example="0.1")
    with pytest.raises(ValueError, match=r"^weight_decay must be a number >= 0; got -1\.0$"):
        checks.non_negative(-1.0, "weight_decay")
    with pytest.raises(ValueError, match=r"^x must be a number in \(0, 1\]; got inf$"):
        checks.number(float("inf"), "x", minimum=0, maximum=1, min_inclusive=False)
    assert checks.fraction(1, "x", allow_one=True) == 1.0


def test_one_of_lists_the_choices():
    with pytest.raises(ValueError, match=r"^schedule must be one of 'step', 'cosine'; got 'linear'$"):
        checks.one_of("linear", "schedule", ("step", "cosine"))
    with pytest.raises(ValueError, match=r"^pooling must be one of None, 'avg'; got \[\]$"):
        checks.one_of([], "pooling", (None, "avg"))
    assert checks.one_of("step", "schedule", ("step",)) == "step"


def test_boolean():
    with pytest.raises(TypeError, match=r"^preact must be True or False; got 1$"):
        checks.boolean(1, "preact")


@pytest.mark.parametrize("value", ["", "-a", "a/b", "a..b", "a b", "x" * 129])
def test_name_rejects(value):
    with pytest.raises(ValueError, match=r"^name must be 1-128 letters"):
        checks.name(value)


def test_name_accepts_and_type():
    assert checks.name("resnet-20_v1.2") == "resnet-20_v1.2"
    with pytest.raises(TypeError, match=r"^export_name must be a str"):
        checks.name(3, "export_name")


def test_model_name():
    from keras_resnet.modeling import presets

    assert presets.check_model_name("cifar-resnet20") == "cifar-resnet20"
    with pytest.raises(ValueError, match=r"^unknown model 'resnet21'; model must be one of: resnet18, "):
        presets.check_model_name("resnet21")
    with pytest.raises(TypeError, match=r"^MODEL must be a model name \(a str\); got 3$"):
        presets.check_model_name(3, "MODEL")


def test_checks_imports_nothing_of_the_package():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(checks))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    assert not [m for m in imported if m and m.startswith("keras_resnet")]


def test_writable_dir(tmp_path):
    assert checks.writable_dir(str(tmp_path / "new" / "deeper"), "out") == str(tmp_path / "new" / "deeper")
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"^out must be a directory; got .*, which is a file$"):
        checks.writable_dir(str(a_file), "out")
    with pytest.raises(ValueError, match=r"^export_dir must be a directory path; got .*is a file$"):
        checks.writable_dir(str(a_file / "sub"), "export_dir")


def test_created_dir_makes_it_or_names_the_os_reason(tmp_path):
    target = tmp_path / "new" / "deeper"
    assert checks.created_dir(str(target), "out") == str(target) and target.is_dir()
    assert checks.created_dir(str(target), "out") == str(target)  # exists already: fine
    if os.path.isdir("/proc/self"):  # passes a permission check as root, refuses mkdir
        with pytest.raises(ValueError, match=r"^--out '/proc/kr-x' cannot be created: No such "
                                             r"file or directory$"):
            checks.created_dir("/proc/kr-x", "--out")


def test_checks_and_constants_import_without_tensorflow():
    code = ("import sys, importlib.util\n"
            "for m in ('checks', 'constants', 'files'):\n"
            "    spec = importlib.util.spec_from_file_location(m, 'keras_resnet/' + m + '.py')\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "models.config"
    files.write_text(str(target), "one")
    files.write_text(str(target), "two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["models.config"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_path(str(target)) as temporary:
            with open(temporary, "w") as stream:
                stream.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-{dead.pid}-models.config"
    stale.write_text("half")
    (tmp_path / f".tmp-{dead.pid}-staging").mkdir()
    live = tmp_path / f".tmp-{os.getppid()}-models.config"   # the test runner's parent is alive
    live.write_text("in progress")
    mine = tmp_path / f".tmp-{os.getpid()}-x"
    mine.write_text("mine")
    removed = files.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == sorted(
        [stale.name, f".tmp-{dead.pid}-staging"])
    assert live.exists() and mine.exists()
