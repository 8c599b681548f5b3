"""The process's environment: besides the pydantic-settings classes, the one module that touches `os.environ`.

Settings are read through their classes (candleflow/settings.py, each provider's settings in providers/). What is
left is the process's own business, named here so `tests/test_settings_only.py` can hold every other module to
that rule: the variables a command sets for its own run (Prefect's quiet console, the warehouse password kept out
of a run's parameters) and gives back to an in-process caller, the environment handed whole to a child process
(a server, a worker) or a warm runner's fork, and the two values the warm runner's client reads before anything
heavy is imported (pydantic-settings alone costs 0.3 s there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def set_default(name: str, value: str) -> None:
    """Set `name` for this process unless the caller already set it."""
    os.environ.setdefault(name, value)


def set_defaults(values: Mapping[str, str]) -> None:
    for name, value in values.items():
        set_default(name, value)


def set_value(name: str, value: str) -> None:
    os.environ[name] = value


def current() -> dict[str, str]:
    """A copy of this process's environment, to hand to a child process or a warm runner."""
    return dict(os.environ)


def replace_with(values: Mapping[str, object]) -> None:
    """This process's environment becomes `values` (a warm runner's fork takes its caller's)."""
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in values.items()})


@contextmanager
def restored() -> Iterator[None]:
    """Variables set inside are removed, and changed ones given back, when the block ends."""
    before = current()
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        os.environ.update(before)


def runtime_dir() -> Path:
    """Where this user's sockets live: $XDG_RUNTIME_DIR, else a directory of their own under /tmp."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/candleflow-{os.getuid()}")


WARM_SOCKET_ENV = "CANDLEFLOW_WARM_SOCKET"  # where the warm runner listens; empty: never use one


def warm_socket() -> str | None:
    """The warm runner's socket ($CANDLEFLOW_WARM_SOCKET): unset (None), empty (no runner) or a path."""
    return os.environ.get(WARM_SOCKET_ENV)
