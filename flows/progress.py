"""In-process progress listeners, so the command line can draw a live display while a flow runs."""

from __future__ import annotations

from typing import Protocol

from candleflow.model import ChunkResult


class ProgressListener(Protocol):
    def started(self, total: int) -> None: ...

    def advanced(self, result: ChunkResult) -> None: ...


_listeners: list[ProgressListener] = []


def add_listener(listener: ProgressListener) -> None:
    _listeners.append(listener)


def remove_listener(listener: ProgressListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def started(total: int) -> None:
    for listener in list(_listeners):
        listener.started(total)


def advanced(result: ChunkResult) -> None:
    for listener in list(_listeners):
        listener.advanced(result)
