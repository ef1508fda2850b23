"""The SQLite registry: one row per model or variant, and every result measured on them."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS variants (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    architecture TEXT,
    parameters INTEGER,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT,
    parent TEXT,
    technique TEXT,
    device TEXT,
    path TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    variant TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    settings TEXT NOT NULL,
    metrics TEXT NOT NULL,
    machine TEXT NOT NULL,
    versions TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (variant, kind, key);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VariantRow:
    name: str
    kind: str
    format: str
    architecture: str | None
    parameters: int | None
    size_bytes: int
    sha256: str
    source: str | None
    parent: str | None
    technique: dict[str, Any] | None
    device: str | None
    path: str
    created: str


@dataclass(frozen=True)
class ResultRow:
    id: int
    variant: str
    kind: str
    key: str
    settings: dict[str, Any]
    metrics: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, Any]
    created: str


class Registry:
    """A thin, typed layer over one SQLite file. Each call opens its own connection."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        return db

    # variants -------------------------------------------------------------------------------
    def add_variant(self, row: VariantRow) -> None:
        values = row.__dict__ | {"technique": _dump(row.technique)}
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with closing(self._connect()) as db:
            db.execute(f"INSERT OR REPLACE INTO variants ({cols}) VALUES ({marks})", tuple(values.values()))

    def get_variant(self, name: str) -> VariantRow | None:
        with closing(self._connect()) as db:
            r = db.execute("SELECT * FROM variants WHERE name = ?", (name,)).fetchone()
        return _variant(r) if r else None

    def variants(self, kind: str | None = None) -> list[VariantRow]:
        sql, args = "SELECT * FROM variants", ()
        if kind:
            sql, args = sql + " WHERE kind = ?", (kind,)
        with closing(self._connect()) as db:
            return [_variant(r) for r in db.execute(sql + " ORDER BY created, name", args)]

    def remove_variant(self, name: str) -> None:
        with closing(self._connect()) as db:
            db.execute("DELETE FROM results WHERE variant = ?", (name,))
            db.execute("DELETE FROM variants WHERE name = ?", (name,))

    # results --------------------------------------------------------------------------------
    def add_result(
        self,
        variant: str,
        kind: str,
        key: str,
        settings: dict[str, Any],
        metrics: dict[str, Any],
        machine: dict[str, Any],
        versions: dict[str, Any],
    ) -> int:
        with closing(self._connect()) as db:
            cur = db.execute(
                "INSERT INTO results (variant, kind, key, settings, metrics, machine, versions, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (variant, kind, key, _dump(settings), _dump(metrics), _dump(machine), _dump(versions), now()),
            )
            return int(cur.lastrowid)

    def results(self, variant: str | None = None, kind: str | None = None, key: str | None = None) -> list[ResultRow]:
        clauses, args = [], []
        for col, val in (("variant", variant), ("kind", kind), ("key", key)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT * FROM results{where} ORDER BY id", args).fetchall()
        return [_result(r) for r in rows]


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _variant(r: sqlite3.Row) -> VariantRow:
    d = dict(r)
    d["technique"] = json.loads(d["technique"]) if d["technique"] else None
    return VariantRow(**d)


def _result(r: sqlite3.Row) -> ResultRow:
    d = dict(r)
    for k in ("settings", "metrics", "machine", "versions"):
        d[k] = json.loads(d[k])
    return ResultRow(**d)

