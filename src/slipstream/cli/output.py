"""Shared CLI plumbing: JSON output, rich tables and progress bars, one-line errors."""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

# When output goes to a file or pipe, do not squeeze tables into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 220)  # results (stdout)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # progress, notes, errors


def print_json(data: Any) -> None:
    print(json.dumps(_clean(data), indent=2, sort_keys=False, default=str))


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout inside the block goes to stderr, Python's ``print`` and writes to file
    descriptor 1 by compiled code alike: a library's chatter (lm-eval prints ``bootstrapping for stddev``)
    must not land in front of the one JSON document a ``--json`` command promises on stdout."""
    import contextlib
    import os

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def table(title: str | None, headers: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, header_style="bold")
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(c) for c in r])
    out.print(t)


class _Task:
    def __init__(self, bar: Progress, task_id: int):
        self.bar, self.id = bar, task_id

    def advance(self, amount: float = 1) -> None:
        self.bar.advance(self.id, amount)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        self.bar.update(self.id, description=description, total=total)


class RichProgress:
    """The library's Progress protocol drawn as rich progress bars on stderr. Tasks opened while
    another is running share its live display (rich allows one at a time)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._live: Progress | None = None

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[_Task]:
        if self.enabled and not err.is_terminal:  # logs get a line per task instead of a live bar
            err.print(f"… {description}", highlight=False)
        if self._live is not None:  # nested: a row in the running display
            task_id = self._live.add_task(description, total=total)
            try:
                yield _Task(self._live, task_id)
            finally:
                self._live.remove_task(task_id)
            return
        bar = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False,
                       disable=not self.enabled)
        self._live = bar
        try:
            with bar:
                task_id = bar.add_task(description, total=total)
                yield _Task(bar, task_id)
                if total is not None:
                    bar.update(task_id, completed=total)
        finally:
            self._live = None

    def log(self, message: str) -> None:
        if self.enabled:
            err.print(message)


def mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:,.1f} MB"
