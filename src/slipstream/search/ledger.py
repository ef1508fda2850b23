"""A search's ledger: one JSON line per finished candidate, appended and fsynced as each finishes.

It lives in ``$SLIPSTREAM_HOME/searches/<search id>/`` beside ``search.json`` (the identity the id is the
hash of) and, once the search ends, ``result.json``. A line is :meth:`SearchRecord.to_dict
<slipstream.search.record.SearchRecord.to_dict>`; ledgers written before records were typed load as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from slipstream.jsonlines import json_lines
from slipstream.search.record import SearchRecord


class Ledger:
    """Append-only JSON lines, one per finished candidate, fsynced: a kill loses at most the candidate
    that was running, never a finished one."""

    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "search.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
        self.path = directory / "ledger.jsonl"

    def load(self) -> dict[str, SearchRecord]:
        """The finished candidates by id (a later line for the same id wins). A line cut short by a kill,
        or one that is not a record, is skipped: its candidate runs again."""
        out: dict[str, SearchRecord] = {}
        if self.path.exists():
            for data in json_lines(self.path.read_text().splitlines()):
                try:
                    record = SearchRecord.from_dict(data)
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue
                out[record.id] = record
        return out

    def append(self, record: SearchRecord) -> None:
        line = json.dumps(record.to_dict(), default=str) + "\n"
        with open(self.path, "a") as f:
            if f.tell() and not self._ends_a_line():  # a line cut short by a kill: start a new one
                line = "\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _ends_a_line(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
