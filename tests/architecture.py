"""Static checks of the package's form, shared by tests/test_architecture.py and developers.

Run ``python tests/architecture.py`` for a report: import circles (function-level imports
included), imports of a package's own facade, long functions, colliding module names and
``print`` calls in library code.
"""

from __future__ import annotations

import ast
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_resnet"
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, pathlib.Path]:
    """``{dotted module name: path}`` for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(node, module: str, is_package: bool, known) -> list[str]:
    """The package modules one import statement loads (a ``from P import name`` loads
    ``P.name`` when that is a module, else ``P``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "keras_resnet"]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "keras_resnet":
        return []
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in known else base)
    return targets


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every import statement, lazy ones included
    (``if TYPE_CHECKING:`` blocks excluded)."""
    known = modules()
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        type_checking = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                type_checking.update(id(child) for child in ast.walk(node))
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_checking:
                edges.update(_imported(node, module, path.name == "__init__.py", known))
        edges.discard(module)
        graph[module] = {edge for edge in edges if edge in known}
    return graph


def circles(graph=None) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = graph if graph is not None else import_graph()
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def facade_imports(graph=None) -> list[tuple[str, str]]:
    """``(module, package)`` where a submodule imports its own package's ``__init__``."""
    graph = graph if graph is not None else import_graph()
    known = modules()
    bad = []
    for module, targets in graph.items():
        if known[module].name == "__init__.py":
            continue
        for target in targets:
            if known[target].name == "__init__.py" and module.startswith(target + "."):
                bad.append((module, target))
    return sorted(bad)


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, str, int]]:
    """``(path, function, body lines)`` of every function whose body, docstring excluded,
    is longer than ``limit`` lines."""
    long = []
    for path in modules().values():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str) and len(body) > 1):
                body = body[1:]
            lines = body[-1].end_lineno - body[0].lineno + 1
            if lines > limit:
                long.append((str(path.relative_to(PACKAGE.parent)), node.name, lines))
    return sorted(long)


def colliding_names() -> list[list[str]]:
    """Modules whose names collide (singular/plural alike); one ``config.py`` per package and
    ``__init__``/``__main__`` are fine."""
    groups = {}
    for path in PACKAGE.rglob("*.py"):
        stem = path.stem
        if stem in ("__init__", "__main__", "config"):
            continue
        key = stem[:-1] if stem.endswith("s") else stem
        groups.setdefault(key, []).append(str(path.relative_to(PACKAGE.parent)))
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def library_prints() -> list[tuple[str, int]]:
    """``(path, line)`` of ``print(...)`` calls outside ``cli/`` (a library logs)."""
    found = []
    for path in modules().values():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                found.append((str(path.relative_to(PACKAGE.parent)), node.lineno))
    return sorted(found)


def report() -> str:
    graph = import_graph()
    sources = list(modules().values())
    lines = [f"modules: {len(sources)}, lines: {sum(len(p.read_text().splitlines()) for p in sources)}"]
    for name, values in (("circles", circles(graph)), ("facade imports", facade_imports(graph)),
                         ("long functions", long_functions()),
                         ("colliding names", colliding_names()),
                         ("library prints", library_prints())):
        lines.append(f"{name}: {len(values)}")
        lines.extend(f"  {value}" for value in values)
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
