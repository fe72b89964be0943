"""The README's Python snippets for blocks and models run as printed."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _section_snippets(heading):
    text = README.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("heading", ["Blocks", pytest.param("Models", marks=pytest.mark.slow)])
def test_readme_snippets_run(heading):
    snippets = _section_snippets(heading)
    assert snippets, f"no python snippet under ## {heading}"
    namespace = {}
    for snippet in snippets:
        exec(compile(snippet, f"README.md ({heading})", "exec"), namespace)
    if heading == "Models":
        assert namespace["model"].name == "cifar_resnet56"
        assert namespace["resnet20"].count_params() > 0
