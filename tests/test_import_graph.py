"""The package's modules import each other without a cycle, imports inside functions included: every module can
be read (and imported) after the ones it needs."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import fapn

SOURCE = Path(fapn.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def _run_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (imports for the type checker only)."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))
    return nodes


def import_graph(root: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the ``fapn`` modules it imports anywhere in its body (``from package import submodule`` points at
    the submodule; a package is not an edge of its own submodules)."""
    files = {_module_name(path): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _run_time_nodes(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "fapn.engine.detection.model" in graph["fapn.engine.detection.eval"]  # imported inside run_eval
    assert "fapn.convert.pointrend" in graph["fapn.convert"]
    assert "fapn.hub_folder" in graph["fapn.checkpoint"]  # imported inside load_checkpoint


def test_no_import_cycle():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as err:
        raise AssertionError("import cycle: " + " -> ".join(err.args[1])) from None
