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


PLAIN_ABOVE_ROWS = 500  # rich lays a table out cell by cell: 11,000 rows took it 10 s; plain text takes 0.1 s


def print_json(data: object) -> None:
    """JSON on stdout as written (rich's highlighter took 20 s over 11,000 series): two-space indented, or on one
    line when it is a long list (a program reads it then, not a person)."""
    import json

    long = isinstance(data, list) and len(data) > PLAIN_ABOVE_ROWS
    sys.stdout.write(json.dumps(data, indent=None if long else 2) + "\n")
    sys.stdout.flush()


def print_rows(table: object, headers: list[str], rows: list[list[str]], title: str) -> None:
    """`table` (a rich Table holding `rows`) when it is small; above PLAIN_ABOVE_ROWS, the same rows as plain
    aligned text under the title, which a person can still read and a program can still split."""
    if len(rows) <= PLAIN_ABOVE_ROWS:
        out.print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
