"""The modules of ``src/mailrouter`` import each other one way only.

Every import counts, including those inside functions (a function-level import
is still a dependency; it only hides the cycle until the function runs).
Imports under ``if TYPE_CHECKING:`` are left out: they never run.

``python -m tests.test_import_graph`` prints the edges.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "mailrouter"


def module_names() -> dict[str, Path]:
    """Dotted name → file of every module of the package."""
    names: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (at any depth in the file)."""
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    prefix = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    prefix = node.module or ""
                # ``from . import report`` imports a module; ``from .x import y``
                # imports module x (y is a name in it, or a submodule).
                targets = [
                    f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                    for alias in node.names
                ]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return [*path[path.index(target):], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    # Guards the test above against a finder that never finds anything.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    # Known edges of different shapes: package-relative, parent-relative.
    assert "mailrouter.config" in graph["mailrouter.backend"]
    assert "mailrouter.health.breaker" in graph["mailrouter.health.monitor"]
    assert "mailrouter.outcomes" in graph["mailrouter.health.monitor"]
    assert len(graph) >= 20


def package_of(module: str, packages: set[str]) -> str:
    """The package of ``mailrouter`` a module belongs to (``mailrouter.health``
    for ``mailrouter.health.store``); a top-level module is its own node."""
    top = ".".join(module.split(".")[:2])
    return top if top in packages else module


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph with each subpackage of ``mailrouter`` as one node."""
    modules = module_names()
    packages = {
        name for name, path in modules.items()
        if path.name == "__init__.py" and name.count(".") == 1
    }
    collapsed: dict[str, set[str]] = {package_of(name, packages): set() for name in graph}
    for source, targets in graph.items():
        for target in targets:
            a, b = package_of(source, packages), package_of(target, packages)
            if a != b:
                collapsed[a].add(b)
    return collapsed


#: Packages that must import each other one way only (the rest of the package
#: graph has older cycles: management ↔ outbox).
LAYERED = ("mailrouter.health", "mailrouter.status_pages", "mailrouter.shared_state")


def test_health_and_status_pages_packages_import_each_other_one_way() -> None:
    collapsed = package_graph(import_graph())
    layered = {name: collapsed[name] & set(LAYERED) for name in LAYERED}
    cycle = find_cycle(layered)
    assert cycle is None, "package import cycle: " + " → ".join(cycle or [])
    # Status pages plug into health through its source interface only.
    assert "mailrouter.health" in layered["mailrouter.status_pages"]
    assert "mailrouter.status_pages" not in layered["mailrouter.health"]


def test_status_pages_see_health_only_through_its_source_interface() -> None:
    graph = import_graph()
    into_health = {
        target for source, targets in graph.items() if source.startswith("mailrouter.status_pages")
        for target in targets if target.startswith("mailrouter.health")
    }
    assert into_health == {"mailrouter.health.sources"}


def test_the_package_graph_collapses_subpackages() -> None:
    # Guards the checks above: a cycle between two packages' modules shows.
    graph = {
        "mailrouter.health.monitor": {"mailrouter.status_pages.refresh"},
        "mailrouter.status_pages.refresh": {"mailrouter.health.store"},
        "mailrouter.health.store": set(),
    }
    collapsed = package_graph(graph)
    assert collapsed["mailrouter.health"] == {"mailrouter.status_pages"}
    assert find_cycle(collapsed) == [
        "mailrouter.health", "mailrouter.status_pages", "mailrouter.health"
    ]


@pytest.mark.parametrize("module", sorted(module_names()))
def test_no_module_uses_another_modules_private_names(module: str) -> None:
    path = module_names()[module]
    tree = ast.parse(path.read_text(), str(path))
    ours = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.level or (node.module or "").startswith(PACKAGE))
    ]
    imported_names = {alias.asname or alias.name for node in ours for alias in node.names}
    offenders = [
        f"from {node.module} import {alias.name}"
        for node in ours
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ] + [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in imported_names
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert not offenders, f"{module} uses private names of other modules: {offenders}"


#: The mail libraries only ``mailrouter.leafkinds`` may know (and the test
#: servers of ``mailrouter.testing``).
LEAF_LIBRARIES = ("smtplib", "requests", "urllib3", "botocore", "boto3", "anymail")
_LIBRARY_WORD = re.compile(r"\b(" + "|".join(LEAF_LIBRARIES) + r")\b")
_MAY_KNOW_LIBRARIES = ("mailrouter.leafkinds", "mailrouter.testing")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (prose may name a library)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def library_mentions(tree: ast.AST) -> list[str]:
    """Where code (not prose) imports or names a leaf library: imports at any
    depth, identifiers, and strings (class paths, module names for
    ``sys.modules``, messages)."""
    prose = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _LIBRARY_WORD.match(a.name)]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            if _LIBRARY_WORD.match(node.module or ""):
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id in LEAF_LIBRARIES:
            found.append(f"name {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in LEAF_LIBRARIES:
            found.append(f"attribute .{node.attr}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in prose
            and _LIBRARY_WORD.search(node.value)
        ):
            found.append(f"string {node.value!r}")
    return found


@pytest.mark.parametrize(
    "module",
    sorted(name for name in module_names() if not name.startswith(_MAY_KNOW_LIBRARIES)),
)
def test_only_leaf_kinds_know_the_mail_libraries(module: str) -> None:
    path = module_names()[module]
    mentions = library_mentions(ast.parse(path.read_text(), str(path)))
    assert not mentions, f"{module} knows a leaf library (move it to a leaf kind): {mentions}"


def test_library_mentions_are_found_in_every_shape() -> None:
    # Guards the test above against a finder that never finds anything.
    source = (
        '"""Docstrings may say anymail."""\n'
        "import smtplib\n"
        "def f():\n"
        "    from anymail.exceptions import AnymailError\n"
        "    import sys\n"
        '    sys.modules.get("botocore.config")\n'
        '    return requests.post, x.urllib3, "boto3 retries"\n'
    )
    assert sorted(library_mentions(ast.parse(source))) == [
        "attribute .urllib3",
        "from anymail.exceptions import ...",
        "import smtplib",
        "name requests",
        "string 'boto3 retries'",
        "string 'botocore.config'",
    ]
    assert library_mentions(ast.parse('"""About anymail and requests."""\nx = "mail"\n')) == []


if __name__ == "__main__":
    for source, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            print(f"{source} -> {target}")
