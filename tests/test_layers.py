"""The layout tells the architecture: nothing imports upwards (DESIGN.md, Shape)."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The layers, bottom to top: each may import those below it, never those above; the lowest five not Prefect.
LAYERS = ["candleflow", "providers", "warehouse", "expectations", "ingest", "tasks", "flows", "deployments", "cli"]
SIDE_BY_SIDE = {"providers", "warehouse", "expectations"}  # one level: none of them imports another
NO_PREFECT = {"candleflow", "providers", "warehouse", "expectations", "ingest"}


def forbidden(layer: str) -> set[str]:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    beside = SIDE_BY_SIDE - {layer} if layer in SIDE_BY_SIDE else set()
    return above | beside | ({"prefect"} if layer in NO_PREFECT else set())


def test_every_package_folder_is_a_layer() -> None:
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert folders == set(LAYERS)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_no_upward_imports(layer: str) -> None:
    offenders = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = imported_packages(path) & forbidden(layer)
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
