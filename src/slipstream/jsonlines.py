"""Reading JSON-lines streams: a worker's event pipe, an append-only ledger."""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator


def json_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Each line that parses as JSON; the others (a library printing to a worker's stdout, a last line
    cut short by a kill) are skipped."""
    for line in lines:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
