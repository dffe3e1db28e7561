"""The package's run-time imports form no cycle, wherever the import statement sits."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_provider_clubcollect

PACKAGE = Path(airflow_provider_clubcollect.__file__).parent
NAME = PACKAGE.name


def _module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of nodes under ``if TYPE_CHECKING:``: imports for annotations may point either way."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def _imports(module: str, source: str | None = None) -> set[str]:
    """The package's modules that ``module`` imports at run time: at its top or inside any function."""
    path = MODULES[module]
    tree = ast.parse(path.read_text() if source is None else source)
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # "from pkg import module" imports the module; "from module import name" the module.
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_inside_the_package() -> None:
    graph = {module: _imports(module) for module in MODULES}
    assert _cycles(graph) == []


def test_the_walk_sees_imports_inside_functions_and_skips_type_checking_ones() -> None:
    source = f"""
from typing import TYPE_CHECKING
from {NAME} import wire
if TYPE_CHECKING:
    from {NAME}.hooks.clubcollect import ClubCollectHook
def later():
    from .exceptions import ClubCollectError
    import {NAME}.selection
"""
    assert _imports(f"{NAME}.paging", source) == {f"{NAME}.wire", f"{NAME}.exceptions", f"{NAME}.selection"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
