"""The package's import structure: every part imports only parts below it, no import cycles, no deferred imports.

Layers, bottom to top: errors and choices; config and utils; data, models, losses, optim and graph (library
building blocks); eval, methods, refine, viz and report (library stages); training (the loop); run (the run
directory and its stages); cli. A part may import its own layer or lower ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sslgraph

PACKAGE = Path(sslgraph.__file__).parent
LAYERS = (
    ("errors", "choices"),
    ("config", "utils"),
    ("data", "models", "losses", "optim", "graph"),
    ("eval", "methods", "refine", "viz", "report"),
    ("training",),
    ("run",),
    ("cli", "__main__", "__init__"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# The command line imports each stage when its sub-command runs, so `sslgraph --help` stays light.
DEFERRED_ALLOWED = {"cli"}


def _part(module: str) -> str:
    """``sslgraph.graph.bank`` -> ``graph``; ``sslgraph.config`` -> ``config``."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports() -> list[tuple[str, str, bool]]:
    """(importing part, imported part, deferred) for every sslgraph import in the package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        module = ".".join(("sslgraph", *relative.parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "sslgraph" else [f"sslgraph.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("sslgraph.") and name != module:
                    guarded = isinstance(node, ast.ImportFrom) and _under_type_checking(tree, node)
                    found.append((_part(module), _part(name), id(node) not in top_level and not guarded))
    return found


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            if any(child is target for child in ast.walk(node)):
                return True
    return False


def test_every_part_is_in_a_layer() -> None:
    parts = {_part(".".join(("sslgraph", *p.relative_to(PACKAGE).with_suffix("").parts))) for p in
             PACKAGE.rglob("*.py")}
    assert parts <= set(RANK), sorted(parts - set(RANK))


def test_no_part_imports_a_part_above_it() -> None:
    upward = sorted({(a, b) for a, b, _ in _imports() if a != b and RANK[b] > RANK[a]})
    assert not upward, f"upward imports: {upward}"


def test_config_imports_only_the_bottom_layer() -> None:
    assert {b for a, b, _ in _imports() if a == "config"} <= {"errors", "choices"}


def test_no_import_cycles_between_parts() -> None:
    graph: dict[str, set[str]] = {}
    for a, b, _ in _imports():
        if a != b:
            graph.setdefault(a, set()).add(b)
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in visiting, f"import cycle: {' -> '.join([*path, node])}"
        if node in done:
            return
        visiting.add(node)
        for child in sorted(graph.get(node, ())):
            visit(child, [*path, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_imports_are_at_module_level() -> None:
    deferred = sorted({(a, b) for a, b, late in _imports() if late and a not in DEFERRED_ALLOWED})
    assert not deferred, f"deferred imports (a sign of a cycle being dodged): {deferred}"
