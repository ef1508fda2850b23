"""The registry: one row per model or variant, every result measured on them, and the platform's jobs.

It sits on SQLAlchemy Core, so the same code runs on two databases:

- **SQLite** (the default): ``registry.sqlite`` in the store's home, in WAL mode (readers never wait for a
  writer), with a busy timeout and foreign keys on. Every write transaction starts with ``BEGIN IMMEDIATE``,
  which takes the database's write lock up front and waits for it (the busy timeout) instead of failing half
  way with "database is locked" when two processes write at once.
- **PostgreSQL** for a team: ``SLIPSTREAM_DATABASE_URL=postgresql+psycopg://user:pass@host/db`` (psycopg 3,
  the ``postgres`` extra). Every process that shares the database must see the same store home (the rows
  hold paths relative to it).

The schema is versioned with Alembic (``slipstream/store/migrations/``) and brought to the newest revision
when a registry is opened, under a lock (SQLite's write lock; a PostgreSQL advisory lock), so processes that
open a new or an old database at the same moment migrate it once. A ``registry.sqlite`` written before the
migrations (``PRAGMA user_version = 1``, no ``alembic_version`` table) is upgraded in place: its tables are
kept as they are, rows included, and the newer tables added beside them. An open that finds the database
already at the newest revision reads one row and never imports Alembic.

Values that are dicts (a technique, a result's figures, a job's spec) are stored as JSON text on both
databases, so rows written by the sqlite3 registry read back unchanged.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from slipstream.errors import NotFound, SlipstreamError

# The Alembic revision the code below expects (tests check it is the head of migrations/versions/).
HEAD = "0003_deployments"
# The registry database's URL; unset, the SQLite file in the store's home.
DATABASE_URL_ENV = "SLIPSTREAM_DATABASE_URL"
BUSY_TIMEOUT_S = 60
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
# What update_job may change (id, kind, spec and created are set once by add_job).
JOB_FIELDS = ("state", "progress", "result", "error", "started", "finished", "pid", "attempts", "worker")
DEPLOYMENT_STATES = ("deploying", "ready", "failed", "stopping", "stopped")
# What update_deployment may change (id, name and created are set once by add_deployment).
DEPLOYMENT_FIELDS = ("runtime", "spec", "state", "url", "pid", "error")
# Keys job_events() adds to each event, so an event cannot carry them itself.
EVENT_KEYS = ("id", "created")
# A fixed key for pg_advisory_xact_lock while migrating ("slip" in ASCII).
_MIGRATION_LOCK = 0x736C6970


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


@dataclass(frozen=True)
class JobRow:
    """A job of the platform. ``state`` is one of :data:`JOB_STATES`; ``progress`` and ``result`` are what the
    runner last stored (None until then); ``worker`` names who claimed it (:meth:`Registry.claim_job`)."""

    id: str
    kind: str
    spec: dict[str, Any]
    state: str
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created: str
    updated: str
    started: str | None
    finished: str | None
    pid: int | None
    attempts: int
    worker: str | None


@dataclass(frozen=True)
class DeploymentRow:
    """A deployment of the platform: its spec (slipstream's deployment spec, as JSON), the ``runtime`` that
    runs it (``process``: one ``slipstream serve``; ``ray``: ``slipstream deploy`` on Ray Serve), its state
    (one of :data:`DEPLOYMENT_STATES`), the endpoint's URL and the pid of the process that serves it."""

    id: str
    name: str
    runtime: str
    spec: dict[str, Any]
    state: str
    url: str | None
    pid: int | None
    error: str | None
    created: str
    updated: str


# The tables as the queries see them. Their DDL lives in the migrations, which stay as they were written.
_meta = sa.MetaData()
variants_t = sa.Table(
    "variants", _meta,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text), sa.Column("format", sa.Text), sa.Column("architecture", sa.Text),
    sa.Column("parameters", sa.BigInteger), sa.Column("size_bytes", sa.BigInteger), sa.Column("sha256", sa.Text),
    sa.Column("source", sa.Text), sa.Column("parent", sa.Text), sa.Column("technique", sa.Text),
    sa.Column("device", sa.Text), sa.Column("path", sa.Text), sa.Column("created", sa.Text),
)
results_t = sa.Table(
    "results", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("variant", sa.Text), sa.Column("kind", sa.Text), sa.Column("key", sa.Text),
    sa.Column("settings", sa.Text), sa.Column("metrics", sa.Text), sa.Column("machine", sa.Text),
    sa.Column("versions", sa.Text), sa.Column("created", sa.Text),
)
jobs_t = sa.Table(
    "jobs", _meta,
    sa.Column("seq", sa.Integer, primary_key=True),  # the order jobs were added in (created is in seconds)
    sa.Column("id", sa.Text), sa.Column("kind", sa.Text), sa.Column("spec", sa.Text), sa.Column("state", sa.Text),
    sa.Column("progress", sa.Text), sa.Column("result", sa.Text), sa.Column("error", sa.Text),
    sa.Column("created", sa.Text), sa.Column("updated", sa.Text), sa.Column("started", sa.Text),
    sa.Column("finished", sa.Text), sa.Column("pid", sa.Integer), sa.Column("attempts", sa.Integer),
    sa.Column("worker", sa.Text),
)
job_events_t = sa.Table(
    "job_events", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.Text), sa.Column("event", sa.Text), sa.Column("created", sa.Text),
)

deployments_t = sa.Table(
    "deployments", _meta,
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("id", sa.Text), sa.Column("name", sa.Text), sa.Column("runtime", sa.Text), sa.Column("spec", sa.Text),
    sa.Column("state", sa.Text), sa.Column("url", sa.Text), sa.Column("pid", sa.Integer), sa.Column("error", sa.Text),
    sa.Column("created", sa.Text), sa.Column("updated", sa.Text),
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def database_url(location: Path | str) -> str:
    """The SQLAlchemy URL for ``location``: a URL as given (``postgresql://`` and ``postgres://`` mean psycopg 3),
    anything else a path to an SQLite file."""
    text = str(location)
    if "://" not in text:
        return f"sqlite+pysqlite:///{Path(text).expanduser().resolve()}"
    if re.match(r"postgres(ql)?://", text):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _engine(url: str) -> Engine:
    """One engine per database per process: SQLite connections are opened per use (as cheap as a file open;
    nothing is held between calls), PostgreSQL's are pooled, and the pool is dropped in a forked child."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _make_engine(url)
        return engine


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, poolclass=NullPool,
                                  connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        try:
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except ModuleNotFoundError as exc:
            from slipstream.errors import MissingExtra

            raise MissingExtra(f"{safe_url(url)} needs psycopg: pip install 'slipstream[postgres]' ({exc})") from None
        _pooled.add(engine)
        return engine
    raise SlipstreamError(f"unsupported registry database {safe_url(url)}: use an SQLite file or "
                          "postgresql+psycopg://user:password@host/database")


def _sqlite_connect(dbapi_connection, _record) -> None:
    # The sqlite3 module's own transaction handling would open transactions late (and never for DDL);
    # _sqlite_begin emits BEGIN itself (SQLAlchemy's documented recipe for pysqlite).
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA foreign_keys = ON")
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cur.execute("PRAGMA journal_mode = WAL")  # persistent: set once per database file
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("slipstream_write") else "BEGIN")


# Pooled engines, dropped (not closed: the parent still uses those sockets) in a child after fork().
_pooled: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork() -> None:
    for engine in list(_pooled):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class Registry:
    """A thin, typed layer over the registry database. ``location`` is an SQLite file or a database URL."""

    def __init__(self, location: Path | str):
        self.url = database_url(location)
        self.path: Path | None = None
        if make_url(self.url).get_backend_name() == "sqlite" and make_url(self.url).database not in (None, "", ":memory:"):
            self.path = Path(make_url(self.url).database)
        self.engine = _engine(self.url)
        self.dialect = self.engine.dialect.name
        try:
            self._migrate()
        except sa.exc.OperationalError as exc:
            raise SlipstreamError(f"cannot open the registry at {safe_url(self.url)}: {_first_line(exc)}") from exc

    def __repr__(self) -> str:
        return f"Registry({safe_url(self.url)!r})"

    # connections ----------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction that writes: committed when the block ends, rolled back if it raises. On SQLite it
        holds the write lock from its first statement (BEGIN IMMEDIATE)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(slipstream_write=True)
            with conn.begin():
                yield conn

    def _migrate(self) -> None:
        with self._read() as conn:
            if _revision(conn) == HEAD:
                return
        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            if _revision(conn) == HEAD:  # another process migrated it while this one waited
                return
            from slipstream.store.migrations import upgrade

            upgrade(conn)

    def revision(self) -> str | None:
        """The schema revision the database is at (:data:`HEAD` once opened)."""
        with self._read() as conn:
            return _revision(conn)

    # variants -------------------------------------------------------------------------------
    def add_variant(self, row: VariantRow) -> None:
        values = row.__dict__ | {"technique": _dump(row.technique)}
        stmt = _insert(self.dialect, variants_t).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["name"],
                                          set_={k: stmt.excluded[k] for k in values if k != "name"})
        with self._write() as conn:
            conn.execute(stmt)

    def get_variant(self, name: str) -> VariantRow | None:
        with self._read() as conn:
            r = conn.execute(sa.select(variants_t).where(variants_t.c.name == name)).mappings().first()
        return _variant(r) if r else None

    def variants(self, kind: str | None = None) -> list[VariantRow]:
        q = sa.select(variants_t)
        if kind:
            q = q.where(variants_t.c.kind == kind)
        with self._read() as conn:
            return [_variant(r) for r in conn.execute(q.order_by(variants_t.c.created, variants_t.c.name)).mappings()]

    def remove_variant(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(sa.delete(results_t).where(results_t.c.variant == name))
            conn.execute(sa.delete(variants_t).where(variants_t.c.name == name))

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
        with self._write() as conn:
            cur = conn.execute(sa.insert(results_t).values(
                variant=variant, kind=kind, key=key, settings=_dump(settings), metrics=_dump(metrics),
                machine=_dump(machine), versions=_dump(versions), created=now()))
            return int(cur.inserted_primary_key[0])

    def results(self, variant: str | None = None, kind: str | None = None, key: str | None = None) -> list[ResultRow]:
        q = sa.select(results_t)
        for col, val in (("variant", variant), ("kind", kind), ("key", key)):
            if val is not None:
                q = q.where(results_t.c[col] == val)
        with self._read() as conn:
            rows = conn.execute(q.order_by(results_t.c.id)).mappings().all()
        return [_result(r) for r in rows]

    # jobs -----------------------------------------------------------------------------------
    def add_job(self, kind: str, spec: dict[str, Any]) -> JobRow:
        """A new job, ``queued``, with a fresh id (uuid4 hex)."""
        job_id, created = uuid.uuid4().hex, now()
        with self._write() as conn:
            conn.execute(sa.insert(jobs_t).values(id=job_id, kind=kind, spec=_dump(spec), state="queued",
                                                  created=created, updated=created, attempts=0))
            return self._job(conn, job_id)

    def get_job(self, job_id: str) -> JobRow | None:
        with self._read() as conn:
            return self._job(conn, job_id)

    def jobs(self, state: str | None = None, limit: int | None = None) -> list[JobRow]:
        """Jobs, newest first; only those in ``state`` when given; at most ``limit``."""
        q = sa.select(jobs_t)
        if state is not None:
            q = q.where(jobs_t.c.state == state)
        q = q.order_by(jobs_t.c.seq.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [_job(r) for r in conn.execute(q).mappings()]

    def update_job(self, job_id: str, **fields: Any) -> JobRow:
        """Set ``fields`` (among :data:`JOB_FIELDS`) on the job and return it; NotFound for an unknown id."""
        unknown = set(fields) - set(JOB_FIELDS)
        if unknown:
            raise TypeError(f"update_job: unknown field(s) {', '.join(sorted(unknown))}; "
                            f"fields: {', '.join(JOB_FIELDS)}")
        if "state" in fields and fields["state"] not in JOB_STATES:
            raise ValueError(f"job state {fields['state']!r}: use one of {', '.join(JOB_STATES)}")
        values = {k: _dump(v) if k in ("progress", "result") else v for k, v in fields.items()}
        with self._write() as conn:
            done = conn.execute(sa.update(jobs_t).where(jobs_t.c.id == job_id).values(**values, updated=now()))
            if done.rowcount == 0:
                raise NotFound(f"no job {job_id!r}")
            return self._job(conn, job_id)

    def claim_job(self, worker: str) -> JobRow | None:
        """The oldest queued job, moved to ``running`` for ``worker`` (with ``started`` set), or None when none is
        queued. Atomic across processes: one job is never handed to two claimers (PostgreSQL: ``SELECT ... FOR
        UPDATE SKIP LOCKED``; SQLite: the claim is one ``BEGIN IMMEDIATE`` transaction). ``attempts`` is the
        runner's to count."""
        oldest = (sa.select(jobs_t.c.id).where(jobs_t.c.state == "queued").order_by(jobs_t.c.seq).limit(1))
        if self.dialect == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)
        with self._write() as conn:
            while True:
                job_id = conn.execute(oldest).scalar()
                if job_id is None:
                    return None
                stamp = now()
                done = conn.execute(sa.update(jobs_t).where(jobs_t.c.id == job_id, jobs_t.c.state == "queued")
                                    .values(state="running", worker=worker, started=stamp, updated=stamp))
                if done.rowcount == 1:  # else taken meanwhile (not under these locks; kept as a guard): the next
                    return self._job(conn, job_id)

    def add_job_event(self, job_id: str, event: dict[str, Any]) -> int:
        """Append ``event`` to the job's events; returns its id, larger than every earlier event's of the job."""
        reserved = [k for k in EVENT_KEYS if k in event]
        if reserved:
            raise ValueError(f"a job event cannot carry {', '.join(reserved)}: job_events() adds them")
        with self._write() as conn:
            if self.dialect == "postgresql":
                # Ids come from a sequence and are taken before commit: without this lock, an event could
                # commit after a later one of the same job and be missed by a reader asking for ``after``.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:job))"), {"job": job_id})
            if conn.execute(sa.select(jobs_t.c.seq).where(jobs_t.c.id == job_id)).first() is None:
                raise NotFound(f"no job {job_id!r}")
            cur = conn.execute(sa.insert(job_events_t).values(job_id=job_id, event=_dump(event), created=now()))
            return int(cur.inserted_primary_key[0])

    def job_events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The job's events with an id above ``after``, oldest first: each the dict given to
        :meth:`add_job_event` plus its ``id`` and ``created``."""
        q = (sa.select(job_events_t).where(job_events_t.c.job_id == job_id, job_events_t.c.id > after)
             .order_by(job_events_t.c.id))
        with self._read() as conn:
            return [json.loads(r["event"]) | {"id": r["id"], "created": r["created"]} for r in conn.execute(q).mappings()]

    def _job(self, conn: Connection, job_id: str) -> JobRow | None:
        r = conn.execute(sa.select(jobs_t).where(jobs_t.c.id == job_id)).mappings().first()
        return _job(r) if r else None

    # deployments ----------------------------------------------------------------------------
    def add_deployment(self, name: str, runtime: str, spec: dict[str, Any]) -> DeploymentRow:
        """A new deployment, ``deploying``, with a fresh id (uuid4 hex)."""
        dep_id, created = uuid.uuid4().hex, now()
        with self._write() as conn:
            conn.execute(sa.insert(deployments_t).values(id=dep_id, name=name, runtime=runtime, spec=_dump(spec),
                                                         state="deploying", created=created, updated=created))
            return self._deployment(conn, dep_id)

    def get_deployment(self, dep_id: str) -> DeploymentRow | None:
        with self._read() as conn:
            return self._deployment(conn, dep_id)

    def deployments(self, state: str | None = None, limit: int | None = None) -> list[DeploymentRow]:
        """Deployments, newest first; only those in ``state`` when given; at most ``limit``."""
        q = sa.select(deployments_t)
        if state is not None:
            q = q.where(deployments_t.c.state == state)
        q = q.order_by(deployments_t.c.seq.desc())
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [_deployment(r) for r in conn.execute(q).mappings()]

    def update_deployment(self, dep_id: str, **fields: Any) -> DeploymentRow:
        """Set ``fields`` (among :data:`DEPLOYMENT_FIELDS`) and return the deployment; NotFound for an unknown
        id."""
        unknown = set(fields) - set(DEPLOYMENT_FIELDS)
        if unknown:
            raise TypeError(f"update_deployment: unknown field(s) {', '.join(sorted(unknown))}; "
                            f"fields: {', '.join(DEPLOYMENT_FIELDS)}")
        if "state" in fields and fields["state"] not in DEPLOYMENT_STATES:
            raise ValueError(f"deployment state {fields['state']!r}: use one of {', '.join(DEPLOYMENT_STATES)}")
        values = {k: _dump(v) if k == "spec" else v for k, v in fields.items()}
        with self._write() as conn:
            done = conn.execute(sa.update(deployments_t).where(deployments_t.c.id == dep_id)
                                .values(**values, updated=now()))
            if done.rowcount == 0:
                raise NotFound(f"no deployment {dep_id!r}")
            return self._deployment(conn, dep_id)

    def _deployment(self, conn: Connection, dep_id: str) -> DeploymentRow | None:
        r = conn.execute(sa.select(deployments_t).where(deployments_t.c.id == dep_id)).mappings().first()
        return _deployment(r) if r else None


def copy_registry(source: Registry, target: Registry) -> dict[str, int]:
    """Every row of ``source`` into ``target``, which must hold none yet, ids kept (a result's id, a job's
    events); the number of rows per table. To move a store's registry to another database (docs/database.md):
    stop what writes to it first."""
    counts = {}
    with source._read() as src, target._write() as dst:
        for table in (variants_t, results_t, jobs_t, job_events_t, deployments_t):
            if dst.execute(sa.select(sa.func.count()).select_from(table)).scalar():
                raise SlipstreamError(f"{target!r} already has rows in {table.name}: copy into an empty registry")
            rows = [dict(r) for r in src.execute(sa.select(table)).mappings()]
            for start in range(0, len(rows), 1000):
                dst.execute(sa.insert(table), rows[start:start + 1000])
            counts[table.name] = len(rows)
        if target.dialect == "postgresql":  # the copied ids were given, not drawn: move the sequences past them
            for table, col in ((results_t, "id"), (jobs_t, "seq"), (job_events_t, "id"), (deployments_t, "seq")):
                dst.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col}'), "
                                    f"COALESCE((SELECT max({col}) FROM {table.name}), 0) + 1, false)"))
    return counts


def _revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _insert(dialect: str, table: sa.Table):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _load(text: str | None) -> Any:
    return json.loads(text) if text else None


def _variant(r) -> VariantRow:
    d = dict(r)
    d["technique"] = _load(d["technique"])
    return VariantRow(**d)


def _result(r) -> ResultRow:
    d = dict(r)
    for k in ("settings", "metrics", "machine", "versions"):
        d[k] = json.loads(d[k])
    return ResultRow(**d)


def _job(r) -> JobRow:
    d = dict(r)
    del d["seq"]
    d["spec"] = json.loads(d["spec"])
    d["progress"], d["result"] = _load(d["progress"]), _load(d["result"])
    d["attempts"] = d["attempts"] or 0
    return JobRow(**d)


def _deployment(r) -> DeploymentRow:
    d = dict(r)
    del d["seq"]
    d["spec"] = json.loads(d["spec"])
    return DeploymentRow(**d)
