"""How the command line prints: consoles for stdout and stderr, and table cells printed exactly as written."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

# Not a terminal (a pipe, a log, CI): rich would assume 80 columns and squash the tables.
# emoji=False: symbols such as CAR or DOG inside `synthetic:CAR:1d` must not print as emoji. User strings in
# tables go in as Text (never markup), so `[...]` in a symbol, a path or an error prints as written.
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def cells(*values: object) -> list[Text]:
    """Table cells that print exactly as written (no markup, no emoji codes)."""
    return [Text(str(v)) for v in values]
