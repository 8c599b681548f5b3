"""Settings are read one way: through the pydantic-settings classes (candleflow/settings.py, each provider's
settings class in providers/). No other code reads the environment around them, and only candleflow/environment.py
changes it or hands it on."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_layers import LAYERS

# Every folder of package code. candleflow/environment.py is the one module that touches the process's environment
# itself: the variables a command sets for its own run, the environment handed to a child process or a warm
# runner's fork, the warm runner's socket (read before anything heavy is imported).
FOLDERS = LAYERS  # every package folder is a layer (tests/test_layers.py checks that)
SETTINGS_CODE = {"candleflow/environment.py"}
_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


def environment_reads(source: str) -> list[int]:
    """The lines of `source` that reach the environment through `os` (os.environ, os.getenv, `from os import
    environ`, `import os as x; x.getenv`, ...)."""
    tree = ast.parse(source)
    os_names = {"os"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {alias.asname or alias.name for alias in node.names if alias.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in _ENVIRONMENT]
    lines += [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in _ENVIRONMENT
        and isinstance(node.value, ast.Name)
        and node.value.id in os_names
    ]
    return sorted(lines)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('A')",
        "import os\nx = os.getenv('A')",
        "from os import environ\nx = environ['A']",
        "from os import getenv as g\nx = g('A')",
        "import os as system\nx = system.environ",
    ],
)
def test_the_check_finds_every_way_of_reading_the_environment(source: str) -> None:
    assert environment_reads(source)


def test_the_check_leaves_other_code_alone() -> None:
    assert environment_reads("import os\npath = os.path.join('a', 'b')\nenviron = {}\nx = environ.get('A')") == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_environment_reads_outside_settings_code(folder: str) -> None:
    offenders = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = str(path.relative_to(ROOT))
        found = environment_reads(Path(path).read_text())
        if found and name not in SETTINGS_CODE:
            offenders[name] = found
    assert offenders == {}, "read settings through a pydantic-settings class (see providers/settings.py)"
