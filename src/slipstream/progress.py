"""Progress reporting that the library emits and front ends render.

Library code takes an optional :class:`Progress` and calls ``progress.task(...)``; the CLI passes a
rich-backed implementation, Python callers get silence by default.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(self, *, description: str | None = None, total: float | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> "contextmanager[Task]": ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        pass


class NullProgress:
    """The default: reports nothing."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


def or_null(progress: Progress | None) -> Progress:
    return progress if progress is not None else NullProgress()
