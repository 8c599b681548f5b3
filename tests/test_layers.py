"""The layout tells the architecture: nothing imports upwards (DESIGN.md, Shape)."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# layer -> top-level packages it must never import
FORBIDDEN = {
    "candleflow": {"prefect", "flows", "tasks", "providers", "warehouse", "expectations"},
    "providers": {"prefect", "flows", "tasks", "warehouse", "expectations"},
    "warehouse": {"prefect", "flows", "tasks", "providers", "expectations"},
    "expectations": {"prefect", "flows", "tasks", "providers", "warehouse"},
    "ingest": {"prefect", "flows", "tasks"},
    "tasks": {"flows"},
}
CLI_PACKAGE = "cli"  # candleflow/cli/: the command line sits on top of everything


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer: str) -> None:
    offenders = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        if layer == "candleflow" and CLI_PACKAGE in path.relative_to(ROOT / layer).parts[:-1]:
            continue
        bad = imported_packages(path) & FORBIDDEN[layer]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
