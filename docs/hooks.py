"""MkDocs hook: the pages' generated parts, made at build time from the source tree.

- ``<!-- benchmarks:results-X.json -->`` becomes a table of ``benchmarks/results-X.json``;
- ``<!-- api:keras_resnet.PKG -->`` becomes one mkdocstrings ``:::`` entry per name of that
  package's ``__all__``;
- ``<!-- api-index -->`` becomes the table of the top-level ``keras_resnet`` names, each linked
  to the entry that documents it;
- ``<!-- modules -->`` becomes one table per package of every module and the first paragraph
  of its docstring (``<!-- modules:keras_resnet.data -->`` for one package).

Nothing is imported: ``__all__`` is read from the source with ``ast`` (the top-level package
resolves its names lazily, so its ``__all__`` is computed from ``_EXPORTS``), which keeps the
build free of TensorFlow. A marker naming a missing file or package fails the build.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re

from mkdocs.exceptions import PluginError

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_resnet"
BENCHMARKS = ROOT / "benchmarks"
# The subpackages whose __all__ the API reference documents, one page each (docs/reference/):
# every subpackage that declares a literal __all__ (the CLI declares none).
API_PACKAGES = tuple(sorted(
    path.parent.name for path in PACKAGE.glob("*/__init__.py")
    if re.search(r"^__all__ = ", path.read_text(), flags=re.M)))

MARKER = re.compile(r"<!--\s*(benchmarks|api|api-index|modules)(?::\s*([\w.\-]+))?\s*-->")


# ----------------------------------------------------------------------------- public names

def _module_assignments(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # computed (e.g. __all__ = sorted(_WHERE)): read from its parts below
    return values


def package_all(package):
    """``__all__`` of ``keras_resnet.PACKAGE``, read statically."""
    values = _module_assignments(PACKAGE / package / "__init__.py")
    if "__all__" not in values:
        raise PluginError(f"keras_resnet.{package} has no literal __all__")
    return list(values["__all__"])


def top_level_exports():
    """``{name: defining module}`` of the top-level package (its ``_EXPORTS`` turned around)."""
    exports = _module_assignments(PACKAGE / "__init__.py")["_EXPORTS"]
    return {name: module for module, names in exports.items() for name in names}


def _module_file(module):
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _defines(tree, name):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (
                node.name == name):
            return True
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
    return False


def _names_tested(test):
    """The names an ``if name == "x"`` or ``if name in ("x", "y")`` of ``__getattr__`` covers."""
    if not (isinstance(test, ast.Compare) and len(test.comparators) == 1):
        return ()
    right = test.comparators[0]
    if isinstance(right, ast.Constant):
        return (right.value,)
    if isinstance(right, (ast.Tuple, ast.List, ast.Set)):
        return tuple(e.value for e in right.elts if isinstance(e, ast.Constant))
    return ()


def _lazy_rename(tree, name):
    """``(module, name_there)`` where a PEP 562 ``__getattr__`` answers ``name`` by importing
    (``if name == "fit": from M import run_loop`` or
    ``if name in (...): from P import module; return getattr(module, name)``), else None."""
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and function.name == "__getattr__"):
            continue
        for node in ast.walk(function):
            if not (isinstance(node, ast.If) and name in _names_tested(node.test)):
                continue
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and len(statement.names) == 1:
                    imported = statement.names[0].name
                    submodule = f"{statement.module}.{imported}"
                    if _module_file(submodule).is_file():
                        return submodule, name
                    return statement.module, imported
    return None


def defining_path(module, name):
    """Where ``module.name`` is defined, following ``from X import name`` re-exports and,
    for a package that resolves names lazily (PEP 562), its own modules."""
    path = _module_file(module)
    if not path.is_file():
        raise PluginError(f"no module {module} ({path})")
    tree = ast.parse(path.read_text(), filename=str(path))
    if _defines(tree, name):
        return f"{module}.{name}"
    for node in tree.body:
        if not (isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("keras_resnet")):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) == name:  # ``import X as name`` too
                return defining_path(node.module, alias.name)
    renamed = _lazy_rename(tree, name)  # ``if name == "fit": from M import run_loop``
    if renamed:
        return defining_path(*renamed)
    if path.name == "__init__.py":
        for child in sorted(path.parent.glob("*.py")):
            if child.name != "__init__.py" and _defines(ast.parse(child.read_text()), name):
                return f"{module}.{child.stem}.{name}"
    raise PluginError(f"cannot find where {module}.{name} is defined")


def api_entries(package):
    return "\n\n".join(f"::: {defining_path(f'keras_resnet.{package}', name)}"
                        for name in package_all(package))


def api_index():
    rows = ["| name | defined in |", "|---|---|"]
    for name, module in sorted(top_level_exports().items()):
        target = defining_path(module, name)
        rows.append(f"| `keras_resnet.{name}` | [`{target}`][{target}] |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- benchmarks

def _number(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:,.1f}"
    return str(value).replace("|", "\\|")


def _bench_rows(data):
    """``benchmarks/bench.py --json``: one row per measurement."""
    lines = [f"Machine: {data.get('machine', '?')}; quick: {data.get('quick')}; "
             f"peak RSS {data.get('peak_rss_bytes', 0) / 2**30:.2f} GiB.", ""]
    if data.get("note"):
        lines += [f"Note: {data['note']}", ""]
    lines += ["| benchmark | metric | ours | reference | unit | ratio | note |",
              "|---|---|---:|---:|---|---:|---|"]
    for row in data["rows"]:
        reference = _number(row.get("reference"))
        if row.get("reference_name"):
            reference += f" ({row['reference_name']})"
        lines.append("| " + " | ".join([row.get("benchmark", ""), _number(row.get("metric", "")),
                                         _number(row.get("ours")), reference,
                                         row.get("unit", ""), _number(row.get("ratio")),
                                         _number(row.get("note", ""))]) + " |")
    return lines


def _gpu_results(data):
    """``benchmarks/gpu.py --json``: images/s per config, mode and dtype."""
    environment = data.get("environment", {})
    gpus = ", ".join(environment.get("nvidia_smi", {}).get("gpus", [])) or "?"
    settings = data.get("settings", {})
    lines = [f"GPU: {gpus}; steps {settings.get('steps')}, repeats {settings.get('repeats')}, "
             f"TF32 {settings.get('tf32')}.", "",
             "| mode | dtype | config | batch | images/s | compile s | status |",
             "|---|---|---|---:|---:|---:|---|"]
    for row in data["results"]:
        lines.append("| " + " | ".join(_number(row.get(key, "")) for key in (
            "mode", "dtype", "config", "batch_size", "images_per_s", "compile_s", "status")) + " |")
    ratios = [row for row in data.get("ratios", []) if len(row) > 2]
    if ratios:
        names = sorted({key for row in ratios for key in row} - {"mode", "dtype"})
        lines += ["", "| mode | dtype | " + " | ".join(names) + " |",
                  "|---|---|" + "---:|" * len(names)]
        for row in ratios:
            lines.append(f"| {row['mode']} | {row['dtype']} | "
                         + " | ".join(_number(row.get(name, "")) for name in names) + " |")
    return lines


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and len(value) > 6:
        yield prefix, f"{len(value)} values: {_number(value[0])} … {_number(value[-1])}"
    elif isinstance(value, list):
        yield prefix, ", ".join(_number(item) for item in value)
    else:
        yield prefix, _number(value)


def benchmark_table(filename):
    path = BENCHMARKS / filename
    if not path.is_file() or not filename.startswith("results-"):
        raise PluginError(f"benchmarks marker names {filename!r}: no such benchmarks/results-*.json")
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "rows" in data:
        lines = _bench_rows(data)
    elif isinstance(data, dict) and "results" in data:
        lines = _gpu_results(data)
    else:
        lines = ["| key | value |", "|---|---|"]
        lines += [f"| `{key}` | {value} |" for key, value in _flatten(data)]
    return "\n".join([f"*From `benchmarks/{filename}`, read when this site was built.*", ""]
                     + lines)


# ----------------------------------------------------------------------------- modules

def _summary(path):
    docstring = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    first = docstring.strip().split("\n\n", 1)[0]
    return " ".join(first.split()).replace("|", "\\|")


def module_table(package):
    """Every module of ``keras_resnet.PACKAGE`` (or of the top level, for ``keras_resnet``)
    with the first paragraph of its docstring."""
    folder = PACKAGE if package == "keras_resnet" else PACKAGE / package.removeprefix(
        "keras_resnet.")
    if not (folder / "__init__.py").is_file():
        raise PluginError(f"modules marker names {package!r}: no such package")
    rows = ["| module | what it holds |", "|---|---|"]
    for path in sorted(folder.glob("*.py")):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        rows.append(f"| `{name}` | {_summary(path)} |")
    return "\n".join(rows)


def subpackages():
    return sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


# ----------------------------------------------------------------------------- the hook

def render(markdown):
    def replace(match):
        kind, argument = match.group(1), match.group(2)
        if kind == "benchmarks":
            return benchmark_table(argument or "")
        if kind == "api-index":
            return api_index()
        if kind == "modules":
            if argument:
                return module_table(argument)
            return "\n\n".join([f"### `keras_resnet` (below the storey line)\n\n"
                                 + module_table("keras_resnet")]
                                + [f"### `keras_resnet.{name}`\n\n"
                                   + module_table(f"keras_resnet.{name}")
                                   for name in subpackages()])
        package = (argument or "").removeprefix("keras_resnet.")
        if package not in API_PACKAGES:
            raise PluginError(f"api marker names {argument!r}; known: {API_PACKAGES}")
        return api_entries(package)

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (MkDocs' signature)
    return render(markdown)
