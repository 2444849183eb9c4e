"""Layers point one way: our modules' imports (at the top of a file or inside a function alike) form no cycle, and
no entry point imports another, however indirectly."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("datasets", "models", "reporting")
ENTRY_POINTS = ("main", "evaluate", "bench", "report", "predict")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    files = [*ROOT.glob("*.py"), *(path for package in PACKAGES for path in (ROOT / package).glob("*.py"))]
    return {module_name(path): path for path in files}


def imported(name: str, path: Path, ours: set[str]) -> set[str]:
    """The modules of ours that `name` (in file `path`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .cifar import X`, `from . import resnet_cifar`
                base = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0], node.module]))
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:  # `import datasets.cifar` runs datasets/__init__.py first
            found |= {".".join(target.split(".")[:depth]) for depth in range(1, target.count(".") + 2)}
    # a package's own modules run while the package is being imported: they do not import it again
    return {module for module in found & ours if module != name and not name.startswith(f"{module}.")}


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imported(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if cycle := visit(target, path + [name]):
                return cycle
        done.add(name)
        return None

    return next(filter(None, (visit(name, []) for name in sorted(graph))), None)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_walk_sees_function_level_and_relative_imports():
    """The walk itself: check() imports the registries inside the function; models/ imports its ResNet relatively."""
    graph = import_graph()
    assert {"datasets", "losses", "optim", "train", "models"} <= graph["config"]
    assert "models.resnet_cifar" in graph["models"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_errors_import_nothing_of_ours():
    assert import_graph()["errors"] == set()


def test_no_entry_point_imports_another():
    graph = import_graph()
    for entry in ENTRY_POINTS:
        others = reachable(graph, entry) & set(ENTRY_POINTS)
        assert not others, f"{entry}.py imports the entry point(s) {', '.join(sorted(others))}"
