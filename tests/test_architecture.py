"""The layout docs/architecture.md draws, checked: no import cycles, small modules.

The layering itself (which package may import which) is import-linter's job
(``make check-imports``, contracts in pyproject.toml); these tests check what it does not:
that no module of the product imports another in a cycle, even through an import inside a
function, and that no module grows past the size a newcomer can read in one sitting.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES: tuple[str, ...] = tuple(
    tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
)
MAX_MODULE_LINES = 500
MAX_TEST_FILE_LINES = 600
# Modules allowed past MAX_MODULE_LINES, each with its reason (listed in the closing note of
# the restructuring issue too). Keep this empty where possible.
LONG_MODULES: dict[str, str] = {}


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), i.e. cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:  # recursion depth ≤ the number of modules (a few hundred)
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
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
            if len(component) > 1 or node in edges.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_chain() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert import_cycles({"a": {"a"}}) == [["a"]]


# grimp (import-linter's graph builder) runs in a clean interpreter started in the
# repository root: pytest puts test folders such as tests/model on sys.path, which would
# shadow the product's packages of the same name.
_GRAPH_SCRIPT = """
import json, sys
import grimp
graph = grimp.build_graph(*sys.argv[1:], cache_dir=None)
print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}))
"""


def product_import_graph() -> dict[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _GRAPH_SCRIPT, *PRODUCT_PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return {module: set(targets) for module, targets in json.loads(done.stdout).items()}


def test_the_import_graph_holds_the_product_modules() -> None:
    graph = product_import_graph()
    assert "model.vit" in graph
    assert "app.main" in graph
    assert not any(module.split(".")[-1].startswith("test_") for module in graph)


def test_no_module_of_the_product_imports_another_in_a_cycle() -> None:
    assert import_cycles(product_import_graph()) == []


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_of_the_product_is_longer_than_a_newcomer_can_read() -> None:
    too_long = {
        str(path.relative_to(REPO)): _lines(path)
        for package in PRODUCT_PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if _lines(path) > MAX_MODULE_LINES and str(path.relative_to(REPO)) not in LONG_MODULES
    }
    assert too_long == {}


def test_no_test_file_is_longer_than_a_newcomer_can_read() -> None:
    too_long = {
        str(path.relative_to(REPO)): _lines(path)
        for path in sorted((REPO / "tests").rglob("*.py"))
        if _lines(path) > MAX_TEST_FILE_LINES
    }
    assert too_long == {}


@pytest.mark.parametrize("package", PRODUCT_PACKAGES)
def test_the_architecture_document_describes_every_package(package: str) -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert f"`{package}/`" in text
