"""The folders are the architecture: imports point one way, nothing imports in a circle, functions stay short.

The import graph is read from the source (every `import` statement, at module level or inside a function), not
written down by hand, so a new module or a new import is checked the moment it exists.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIRS = {"edgetpu_models": "edgetpu_models", "nas": "edgetpu_models.nas", "deploy": "edgetpu_models.deploy",
                "quantize": "edgetpu_models.quantize", "searched_archs": "edgetpu_models.searched_archs"}
GENERATED = {"edgetpu_models.nas.service.latency_pb2", "edgetpu_models.nas.service.latency_pb2_grpc"}
MAX_FUNCTION_LINES = 60

def package_modules() -> dict[str, str]:
    """{module name: file} for every module of the installed package, from the source folders."""
    found = {}
    for top, package in PACKAGE_DIRS.items():
        for root, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            rel = os.path.relpath(root, os.path.join(REPO, top))
            prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
            for f in files:
                if f.endswith(".py"):
                    name = prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"
                    if name not in GENERATED:
                        found[name] = os.path.join(root, f)
    return found


def imports_of(module: str, path: str, known: set[str]) -> set[str]:
    """The package modules `module` imports (a `from X import name` that names a submodule counts as that module)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    is_pkg = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: imports_of(m, p, set(modules)) for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, if there is any (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle(graph):
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle(graph):
    planted = {k: set(v) for k, v in graph.items()}
    planted["edgetpu_models.spec"].add("edgetpu_models.nas.latency.estimator")  # which imports spec
    assert _cycle(planted) is not None


def test_imports_point_down_the_layers():
    """The layer order core < models < training < quantize < latency < deploy < service < search < cli is the
    import-linter contract in pyproject.toml (run by `make test`); this runs it under pytest too."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "lint_imports.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_nothing_imports_the_cli(graph):
    def cli(m: str) -> bool:
        return m.startswith("edgetpu_models.cli")

    users = sorted(m for m, deps in graph.items() if not cli(m) and any(cli(d) for d in deps))
    assert not users


def test_no_function_longer_than_60_lines():
    long = []
    for module, path in package_modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {node.end_lineno - start + 1} lines")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)
