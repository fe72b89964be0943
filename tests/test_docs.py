"""The README and the documentation site: the site builds strictly, the API reference covers every
public name, and every code block runs as printed.

Blocks by fence language:

- ``python``: run in this process, in order, one namespace per page;
- ``sh`` / ``bash``: run with bash (``-euo pipefail``), in order, in the page's working
  directory, with this interpreter's ``bin/`` first on ``PATH`` (so ``keras-resnet`` and
  ``python`` are the ones under test);
- ``console`` / ``text`` / ``yaml`` / ``json``: shown, not run (output, or a command that
  cannot run in a test: a GPU, a second host, a download, TF Serving, the test suite itself,
  or a run another test already makes). Each ``keras-resnet`` command of a shell or console
  block, run or not, must still parse with the CLI's own parser, so no page shows a flag that
  does not exist (in a console transcript, the lines after a ``$ `` prompt).

Every page runs in its own temporary directory holding links to the checkout's ``examples/``,
``benchmarks/`` and ``tests/`` and, where the shared fixtures exist, ``resnet18.safetensors``
(torchvision's ResNet-18 layout), the file the pretrained-weights page tells the user to save.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
FIXTURES = ROOT.parent / "shared" / "fixtures" / "torchvision"
BIN = pathlib.Path(sys.executable).parent

RUN_PYTHON = {"python"}
RUN_SHELL = {"sh", "bash"}
SHOWN = {"console", "text", "yaml", "json"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
                   flags=re.S | re.M)

# Pages whose blocks train, export or tune: a few seconds to a minute each on 2 CPU cores.
SLOW = {"README.md", "guides/training.md", "guides/streaming-data.md", "guides/distributed.md",
        "guides/deep-networks.md", "guides/export-and-serving.md", "guides/tuning.md",
        "guides/pretrained-weights.md", "guides/backends.md", "guides/blocks-and-models.md",
        "why-residual-networks.md", "getting-started.md", "guides/evaluation.md"}

# Every subpackage with an __all__ has an API page (docs/reference/<name>.md, in mkdocs.yml).
API_PACKAGES = tuple(sorted(
    path.parent.name for path in (ROOT / "keras_resnet").glob("*/__init__.py")
    if re.search(r"^__all__ = ", path.read_text(), flags=re.M)))


def pages():
    return [README] + sorted(DOCS.rglob("*.md"))


def page_id(path):
    return str(path.relative_to(DOCS)) if path.is_relative_to(DOCS) else path.name


def blocks(path):
    """``(language, code, line)`` of every fenced block of a page, in order."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = len(match.group("indent"))
        code = "".join(line[indent:] + "\n" for line in match.group("code").splitlines())
        found.append((match.group("lang"), code, text.count("\n", 0, match.start()) + 1))
    return found


def _params():
    return [pytest.param(path, id=page_id(path),
                         marks=[pytest.mark.slow] if page_id(path) in SLOW else [])
            for path in pages()]


# ----------------------------------------------------------------------------- the README

def test_readme_is_the_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for needed in ("make train", "make test", "make docs", "[tensorflow]", "[jax]", "[torch]",
                   "[all]", "[dev]", "[docs]"):
        assert needed in text, needed
    # every subcommand in the CLI table
    from keras_resnet.cli import COMMANDS

    for command in COMMANDS:
        assert f"| `{command}` |" in text, command


@pytest.mark.parametrize("path", pages(), ids=page_id)
def test_links_to_pages_exist(path):
    for target in re.findall(r"\]\(([^)#\s]+\.(?:md|png))(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).resolve().is_file(), f"{page_id(path)} links to {target}"


# ----------------------------------------------------------------------------- code blocks

@pytest.mark.parametrize("path", pages(), ids=page_id)
def test_every_block_has_a_known_language(path):
    for language, _, line in blocks(path):
        assert language in RUN_PYTHON | RUN_SHELL | SHOWN, (
            f"{page_id(path)}:{line}: fence language {language!r}; use one of "
            f"{sorted(RUN_PYTHON | RUN_SHELL | SHOWN)}")


def cli_commands(code):
    """The argument lists of the ``keras-resnet`` commands in a block (prompts, environment
    assignments, comments and trailing ``&`` left out)."""
    commands = []
    lines = code.replace("\\\n", " ").splitlines()
    if any(line.startswith("$ ") for line in lines):  # a transcript: only prompts are commands
        lines = [line for line in lines if line.startswith("$ ")]
    for line in lines:
        line = line.strip().removeprefix("$ ")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words = words[1:]
        if not words or not words[0].endswith("keras-resnet"):
            continue
        argv = []
        for word in words[1:]:
            if word in ("&", "&&", "|", "||", ";", ">", "2>&1"):
                break
            argv.append(word)
        commands.append(argv)
    return commands


def test_cli_command_parser_sees_bad_flags():
    from keras_resnet.cli import build_parser

    [argv] = cli_commands("KERAS_BACKEND=jax keras-resnet train --epochs 1 --no-such-flag &  # x")
    assert argv == ["train", "--epochs", "1", "--no-such-flag"]
    assert cli_commands("$ keras-resnet tune --epochs 1\nkeras-resnet tune: error: x") == [
        ["tune", "--epochs", "1"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


@pytest.mark.parametrize("path", pages(), ids=page_id)
def test_every_cli_command_parses(path, capsys):
    from keras_resnet.cli import build_parser

    for language, code, line in blocks(path):
        if language not in RUN_SHELL | {"console"}:
            continue  # output (text), Python, YAML
        for argv in cli_commands(code):
            try:
                build_parser().parse_args(argv)
            except SystemExit as done:  # --help exits 0
                if done.code == 0:
                    continue
                pytest.fail(f"{page_id(path)}:{line}: keras-resnet {' '.join(argv)}: "
                            f"{capsys.readouterr().err}")


def _workspace(tmp_path):
    for name in ("examples", "benchmarks", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    if (FIXTURES / "tv_resnet18.safetensors").is_file():
        (tmp_path / "resnet18.safetensors").symlink_to(FIXTURES / "tv_resnet18.safetensors")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]),
               TF_CPP_MIN_LOG_LEVEL="2")
    return env


@pytest.mark.parametrize("path", _params())
def test_every_block_runs(path, tmp_path, monkeypatch):
    runnable = [b for b in blocks(path) if b[0] in RUN_PYTHON | RUN_SHELL]
    if not runnable:
        pytest.skip(f"{page_id(path)} has no runnable block")
    if "resnet18.safetensors" in path.read_text() and not (
            FIXTURES / "tv_resnet18.safetensors").is_file():
        pytest.skip(f"torchvision fixtures missing: {FIXTURES}")
    env = _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for language, code, line in runnable:
        where = f"{page_id(path)}:{line}"
        if language in RUN_PYTHON:
            exec(compile(code, where, "exec"), namespace)
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"{where}: exit {done.returncode}\n{code}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}")


# ----------------------------------------------------------------------------- the site

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1",
                                   PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return out


@pytest.mark.slow
def test_site_builds_strictly(site):
    assert (site / "index.html").is_file()
    for path in sorted(DOCS.rglob("*.md")):
        page = path.relative_to(DOCS).with_suffix("")
        built = site / (page.parent if page.name == "index" else page) / "index.html"
        assert built.is_file(), f"{path} was not built ({built})"


def test_every_public_package_has_a_reference_page():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert set(API_PACKAGES) >= {"modeling", "data", "training", "export", "serving", "tuning",
                                 "diagnostics", "distribute"}
    for package in API_PACKAGES:
        page = DOCS / "reference" / f"{package}.md"
        assert f"<!-- api:keras_resnet.{package} -->" in page.read_text(), page
        assert f"reference/{package}.md" in nav, f"{page} is not in mkdocs.yml's nav"


@pytest.mark.slow
@pytest.mark.parametrize("package", API_PACKAGES)
def test_api_reference_documents_every_public_name(site, package):
    module = importlib.import_module(f"keras_resnet.{package}")
    html = (site / "reference" / package / "index.html").read_text()
    ids = set(re.findall(r'id="(keras_resnet\.[\w.]+)"', html))
    hooks = _hooks()
    for name in module.__all__:
        where = hooks.defining_path(f"keras_resnet.{package}", name)
        assert where in ids, f"keras_resnet.{package}.{name} ({where}) has no entry"
        value = getattr(module, name)
        if getattr(value, "__module__", "").startswith("keras_resnet") and hasattr(
                value, "__qualname__"):  # the hook's static answer is the import's answer
            assert where == f"{value.__module__}.{value.__qualname__}", name


@pytest.mark.slow
def test_api_reference_documents_every_top_level_name(site):
    import keras_resnet

    html = "".join(p.read_text() for p in (site / "reference").rglob("index.html"))
    ids = set(re.findall(r'id="(keras_resnet\.[\w.]+)"', html))
    for name in keras_resnet.__all__:
        value = getattr(keras_resnet, name)
        assert f"{value.__module__}.{value.__qualname__}" in ids, name


@pytest.mark.slow
def test_benchmarks_page_shows_every_results_file(site):
    source = (DOCS / "benchmarks.md").read_text()
    html = (site / "benchmarks" / "index.html").read_text()
    for path in sorted((ROOT / "benchmarks").glob("results-*.json")):
        assert f"<!-- benchmarks:{path.name} -->" in source, path.name
        assert f"benchmarks/{path.name}</code>, read when this site was built" in html, path.name
    assert "<!-- benchmarks:" not in html


def _hooks():
    sys.path.insert(0, str(DOCS))
    try:
        return importlib.import_module("hooks")
    finally:
        sys.path.remove(str(DOCS))


def test_benchmark_tables_come_from_the_json(tmp_path, monkeypatch):
    hooks = _hooks()
    (tmp_path / "results-x.json").write_text(
        '{"machine": "m", "quick": false, "peak_rss_bytes": 0, "rows": [{"benchmark": "b", '
        '"metric": "step", "ours": 1.5, "reference": 3.0, "unit": "s", "ratio": 2.0}]}')
    monkeypatch.setattr(hooks, "BENCHMARKS", tmp_path)
    table = hooks.render("<!-- benchmarks:results-x.json -->")
    assert "| b | step | 1.5 | 3 | s | 2 |  |" in table
    with pytest.raises(Exception, match="results-missing.json"):
        hooks.render("<!-- benchmarks:results-missing.json -->")
