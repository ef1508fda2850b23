"""The registry on its database layer: rows round-trip as the sqlite3 registry returned them, the schema is
migrated (a registry.sqlite from before the migrations included, in place, rows kept), and the jobs API the
platform builds on. Each test runs on SQLite and on PostgreSQL (tests/store/conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from slipstream.errors import NotFound, SlipstreamError
from slipstream.store import Store
from slipstream.store.registry import HEAD, JobRow, Registry, ResultRow, VariantRow, copy_registry


def _row(name: str, created: str = "2025-01-01T00:00:00+00:00", **kw) -> VariantRow:
    return VariantRow(**{"name": name, "kind": "model", "format": "hf", "architecture": "Llama", "parameters": 7,
                         "size_bytes": 100, "sha256": "0" * 64, "source": "test", "parent": None,
                         "technique": None, "device": None, "path": f"variants/{name}", "created": created} | kw)


def test_migrations_head_is_the_revision_the_code_expects(registry):
    from slipstream.store.migrations import head

    assert head() == HEAD == registry.revision()


def test_variants_round_trip_replace_order_and_remove(registry):
    registry.add_variant(_row("b"))
    registry.add_variant(_row("a"))
    registry.add_variant(_row("Z", created="2025-01-02T00:00:00+00:00"))
    big = 5 * 2**30  # a 5 GiB model: past a 32-bit integer
    child = _row("a-int8", kind="variant", parent="a", technique={"name": "int8", "options": {"x": 1}},
                 device="cpu", size_bytes=big, parameters=big)
    registry.add_variant(child)
    assert registry.get_variant("a-int8") == child
    assert registry.get_variant("nope") is None
    # ordered by created, then name byte by byte (as SQLite does, whatever the server's locale)
    assert [v.name for v in registry.variants()] == ["a", "a-int8", "b", "Z"]
    assert [v.name for v in registry.variants("variant")] == ["a-int8"]
    registry.add_variant(_row("b", architecture="Gemma"))  # the same name again replaces the row
    assert registry.get_variant("b").architecture == "Gemma" and len(registry.variants()) == 4
    registry.add_result("b", "evaluation", "k", {}, {"ppl": 1.0}, {}, {})
    registry.remove_variant("b")  # and its results with it
    assert registry.get_variant("b") is None and registry.results("b") == []


def test_results_round_trip_in_insertion_order(registry):
    ids = [registry.add_result("m", "bench", f"k{i}", {"threads": i}, {"tps": 10.5 * i}, {"cpu": "x"},
                               {"torch": "2"}) for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    rows = registry.results("m")
    assert [r.id for r in rows] == ids and all(isinstance(r, ResultRow) for r in rows)
    assert rows[1].settings == {"threads": 1} and rows[1].metrics == {"tps": 10.5} and rows[1].versions == {"torch": "2"}
    assert [r.key for r in registry.results(kind="bench", key="k2")] == ["k2"]
    assert registry.results(variant="other") == []


def test_jobs_api(registry):
    a = registry.add_job("optimize", {"model": "m", "technique": "cast"})
    assert isinstance(a, JobRow) and len(a.id) == 32 and int(a.id, 16) >= 0
    assert (a.state, a.spec, a.attempts, a.progress, a.result, a.pid, a.worker) == \
        ("queued", {"model": "m", "technique": "cast"}, 0, None, None, None, None)
    b = registry.add_job("bench", {"model": "m"})
    c = registry.add_job("evaluate", {"model": "m"})
    assert registry.get_job(a.id) == a and registry.get_job("f" * 32) is None
    assert [j.id for j in registry.jobs()] == [c.id, b.id, a.id]  # newest first, even within one second
    assert [j.id for j in registry.jobs(limit=2)] == [c.id, b.id]

    claimed = registry.claim_job("host:1")  # the oldest queued
    assert (claimed.id, claimed.state, claimed.worker) == (a.id, "running", "host:1") and claimed.started
    assert [j.id for j in registry.jobs(state="queued")] == [c.id, b.id]

    done = registry.update_job(a.id, state="succeeded", progress={"stage": "done", "fraction": 1.0},
                               result={"variant": "m-bf16"}, finished="2025-01-01T00:00:01+00:00", pid=1234,
                               attempts=1)
    assert (done.state, done.progress, done.result, done.pid, done.attempts) == \
        ("succeeded", {"stage": "done", "fraction": 1.0}, {"variant": "m-bf16"}, 1234, 1)
    assert registry.get_job(a.id) == done
    assert registry.update_job(a.id, pid=None, error="boom").pid is None
    with pytest.raises(TypeError, match="unknown field.*kind"):
        registry.update_job(a.id, kind="other")
    with pytest.raises(ValueError, match="job state"):
        registry.update_job(a.id, state="paused")
    with pytest.raises(NotFound):
        registry.update_job("0" * 32, state="failed")

    assert registry.claim_job("w").id == b.id and registry.claim_job("w").id == c.id
    assert registry.claim_job("w") is None


def test_job_events_are_append_only_with_increasing_ids(registry):
    job, other = registry.add_job("bench", {}), registry.add_job("bench", {})
    ids = [registry.add_job_event(job.id, {"type": "progress", "fraction": i / 4}) for i in range(4)]
    registry.add_job_event(other.id, {"type": "log", "message": "elsewhere"})
    assert ids == sorted(ids) and len(set(ids)) == 4
    events = registry.job_events(job.id)
    assert [e["id"] for e in events] == ids and events[2]["fraction"] == 0.5 and events[0]["type"] == "progress"
    assert all(e["created"] for e in events)
    assert [e["id"] for e in registry.job_events(job.id, after=ids[1])] == ids[2:]
    assert registry.job_events(job.id, after=ids[-1]) == []
    with pytest.raises(ValueError, match="cannot carry id"):
        registry.add_job_event(job.id, {"id": 3})
    with pytest.raises(NotFound):
        registry.add_job_event("0" * 32, {"type": "log"})


def test_the_store_exposes_the_jobs(store):
    job = store.registry.add_job("import", {"source": "x"})
    assert Store(store.home).registry.get_job(job.id) == job  # another open of the same store sees it


def test_downgrade_and_upgrade_again(registry):
    from slipstream.store.migrations import downgrade, upgrade

    registry.add_variant(_row("kept"))
    with registry._write() as conn:
        downgrade(conn, "0001_initial")
    assert registry.revision() == "0001_initial"
    with registry._read() as conn:
        assert not sa.inspect(conn).has_table("jobs")
    with registry._write() as conn:
        upgrade(conn)
    assert registry.revision() == HEAD and registry.get_variant("kept") == _row("kept")
    assert registry.add_job("bench", {}).state == "queued"


# The schema of src/slipstream/store/registry.py before SQLAlchemy (sqlite3, PRAGMA user_version = 1).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS variants (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, format TEXT NOT NULL, architecture TEXT, parameters INTEGER,
    size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, source TEXT, parent TEXT, technique TEXT, device TEXT,
    path TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, variant TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    settings TEXT NOT NULL, metrics TEXT NOT NULL, machine TEXT NOT NULL, versions TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_lookup ON results (variant, kind, key);
"""


def _old_registry(path: Path) -> None:
    """A registry.sqlite as the sqlite3 registry wrote it, with a model, a variant and two results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(OLD_SCHEMA)
    db.execute("PRAGMA user_version = 1")
    for name, kind, parent, technique in (("tiny", "model", None, None),
                                          ("tiny-int8", "variant", "tiny", '{"name": "int8"}')):
        db.execute("INSERT INTO variants VALUES (?, ?, 'hf', 'Llama', 1000, 4000, ?, 'src', ?, ?, 'cpu', ?, ?)",
                   (name, kind, "a" * 64, parent, technique, f"variants/{name}", "2024-06-01T10:00:00+00:00"))
    for key in ("k1", "k2"):
        db.execute("INSERT INTO results (variant, kind, key, settings, metrics, machine, versions, created) "
                   "VALUES ('tiny-int8', 'evaluation', ?, '{\"a\": 1}', '{\"perplexity\": 12.5}', '{}', '{}', "
                   "'2024-06-01T10:00:01+00:00')", (key,))
    db.close()


@pytest.mark.sqlite_only
def test_a_registry_from_before_the_migrations_is_upgraded_in_place(tmp_path):
    home = tmp_path / "home"
    _old_registry(home / "registry.sqlite")
    store = Store(home)  # as `slipstream` opens ~/.slipstream
    assert store.registry.revision() == HEAD
    assert [(v.name, v.parent, v.technique) for v in store.registry.variants()] == \
        [("tiny", None, None), ("tiny-int8", "tiny", {"name": "int8"})]
    assert [(r.id, r.key, r.metrics) for r in store.results("tiny-int8")] == \
        [(1, "k1", {"perplexity": 12.5}), (2, "k2", {"perplexity": 12.5})]
    assert store.add_result("tiny-int8", "evaluation", "k3", {}, {}, {}, {}) == 3  # AUTOINCREMENT carries on
    assert store.registry.add_job("bench", {"model": "tiny"}).state == "queued"  # and the new tables are there
    db = sqlite3.connect(home / "registry.sqlite")
    assert db.execute("SELECT count(*) FROM variants").fetchone() == (2,)
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    db.close()
    assert Store(home).registry.variants() == store.registry.variants()  # a second open changes nothing


@pytest.mark.sqlite_only
def test_sqlite_is_in_wal_mode_with_foreign_keys_and_a_busy_timeout(registry):
    with registry._read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000
    with pytest.raises(sa.exc.IntegrityError):  # a foreign key is enforced
        with registry._write() as conn:
            conn.exec_driver_sql("INSERT INTO job_events (job_id, event, created) VALUES ('none', '{}', 'x')")


def test_an_unreachable_database_is_one_clear_error_without_the_password(database, tmp_path):
    if database is None:
        bad = tmp_path / "not-a-dir" / "x"
        bad.parent.write_text("a file where the registry's directory should be")
        with pytest.raises((SlipstreamError, OSError)):
            Registry(bad / "registry.sqlite")
        return
    port = sa.engine.make_url(database).port
    url = f"postgresql+psycopg://slipstream:s3cret@127.0.0.1:{port}/no_such_database"
    with pytest.raises(SlipstreamError, match="cannot open the registry at .*no_such_database") as err:
        Registry(url)
    assert "s3cret" not in str(err.value)


def test_a_store_moves_to_another_database_with_its_rows_and_ids(registry, tmp_path):
    """docs/database.md's move: a registry.sqlite from before the migrations, copied into the test's database
    (a new SQLite file, or PostgreSQL); the ids go on from where they were."""
    _old_registry(tmp_path / "old" / "registry.sqlite")
    old = Registry(tmp_path / "old" / "registry.sqlite")
    job = old.add_job("bench", {"model": "tiny"})
    first = old.add_job_event(job.id, {"type": "log"})
    dep = old.add_deployment("chat", "process", {"models": [{"name": "chat", "variant": "tiny"}]})
    assert copy_registry(old, registry) == {"variants": 2, "results": 2, "jobs": 1, "job_events": 1,
                                            "deployments": 1}
    assert registry.get_deployment(dep.id) == dep
    registry.add_deployment("later", "ray", {"models": []})
    assert [d.name for d in registry.deployments()] == ["later", "chat"]  # the copied one stays the oldest
    assert registry.variants() == old.variants() and registry.results() == old.results()
    assert registry.get_job(job.id) == job and registry.job_events(job.id) == old.job_events(job.id)
    assert registry.add_result("tiny", "bench", "k", {}, {}, {}, {}) == 3
    assert registry.add_job_event(job.id, {"type": "log"}) > first
    registry.add_job("bench", {})
    assert [j.id for j in registry.jobs()][-1] == job.id  # the copied job stays the oldest
    with pytest.raises(SlipstreamError, match="copy into an empty registry"):
        copy_registry(old, registry)


def test_deployments_are_rows_with_checked_states_and_fields(registry):
    from slipstream.errors import NotFound

    spec = {"port": 8001, "models": [{"name": "chat", "variant": "tiny"}]}
    d = registry.add_deployment("chat", "process", spec)
    assert (d.state, d.runtime, d.spec, d.url, d.pid) == ("deploying", "process", spec, None, None)
    ready = registry.update_deployment(d.id, state="ready", url="http://127.0.0.1:8001/v1", pid=42)
    assert (ready.state, ready.url, ready.pid, ready.created) == ("ready", "http://127.0.0.1:8001/v1", 42, d.created)
    assert registry.deployments(state="ready") == [ready] and registry.deployments(state="failed") == []
    with pytest.raises(ValueError, match="deployment state 'up'"):
        registry.update_deployment(d.id, state="up")
    with pytest.raises(TypeError, match="name"):
        registry.update_deployment(d.id, name="other")
    with pytest.raises(NotFound):
        registry.update_deployment("nope", state="stopped")
    assert registry.get_deployment("nope") is None
