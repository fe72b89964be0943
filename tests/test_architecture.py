"""The house's form: layering (import-linter), no circles, short functions, one name per module,
a quiet library, and the public names and CLI of 0.1 still there."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

import architecture

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC_API = json.loads((ROOT / "tests" / "data" / "public_api.json").read_text())
# where the names of the dissolved keras_resnet.pretrained package live now
PRETRAINED_HOMES = ("keras_resnet.modeling", "keras_resnet.training.fine_tuning")


def test_layering_contracts_hold():
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.lower().split("contracts:")[-1].split("kept")[0]


def test_no_import_circles_lazy_imports_included():
    assert architecture.circles() == []


def test_no_submodule_imports_its_own_package_facade():
    assert architecture.facade_imports() == []


def test_circle_detector_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert architecture.circles(graph) == [["a", "b", "c"]]


def test_no_function_longer_than_60_lines():
    assert architecture.long_functions() == []


def test_no_two_modules_share_a_name():
    assert architecture.colliding_names() == []


def test_library_code_logs_instead_of_printing():
    assert architecture.library_prints() == []


@pytest.mark.parametrize("package", sorted(k for k in PUBLIC_API if k.startswith("keras_resnet")))
def test_public_names_of_0_1_are_still_exported(package):
    module = importlib.import_module(package)
    missing = sorted(set(PUBLIC_API[package]) - set(module.__all__))
    assert missing == []
    for name in PUBLIC_API[package]:
        assert getattr(module, name) is not None


def test_names_of_the_dissolved_pretrained_package_have_a_home():
    homes = [importlib.import_module(home) for home in PRETRAINED_HOMES]
    for name in PUBLIC_API["moved"]["keras_resnet.pretrained"]:
        assert any(hasattr(home, name) for home in homes), name


def test_cli_commands_and_flags_of_0_1_are_still_there():
    from keras_resnet.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction)).choices
    for command, expected in PUBLIC_API["cli"].items():
        assert command in commands, command
        sub = commands[command]
        flags = {flag for action in sub._actions for flag in action.option_strings}
        assert sorted(set(expected["flags"]) - flags) == [], command
        positionals = [action.dest for action in sub._actions if not action.option_strings]
        assert positionals[:len(expected["positionals"])] == expected["positionals"], command
