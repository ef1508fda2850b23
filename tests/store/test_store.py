"""The store writes variants atomically and recovers from a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from slipstream.errors import InvalidConfig, NotFound
from slipstream.store import Store
from slipstream.store.manifest import Manifest


def _commit_dummy(store: Store, name: str, payload: bytes = b"weights") -> None:
    with store.stage(name) as staged:
        (staged / "weights.bin").write_bytes(payload)
        store.commit(staged, name=name, kind="model", format="hf", architecture="Dummy", parameters=3,
                     source="test")


def test_commit_registers_and_writes_manifest(store):
    _commit_dummy(store, "m1")
    record = store.get("m1")
    manifest = Manifest.read(record.path)
    assert record.size_bytes == len(b"weights") == manifest.size_bytes
    assert [f.path for f in manifest.files] == ["weights.bin"]
    assert record.sha256 == manifest.sha256 and len(record.sha256) == 64
    assert "python" in manifest.library_versions
    assert [r.name for r in store.list()] == ["m1"]


def test_failed_stage_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        with store.stage("m2") as staged:
            (staged / "half.bin").write_bytes(b"x")
            raise RuntimeError("conversion failed")
    assert not store.exists("m2")
    assert list(store.staging_dir.iterdir()) == []
    assert list(store.variants_dir.iterdir()) == []


def test_duplicate_and_bad_names_are_refused(store):
    _commit_dummy(store, "m1")
    with pytest.raises(InvalidConfig, match="already exists"):
        with store.stage("m1"):
            pass
    with pytest.raises(InvalidConfig, match="invalid name"):
        with store.stage("../escape"):
            pass


def test_unknown_name_lists_known_ones(store):
    _commit_dummy(store, "m1")
    with pytest.raises(NotFound, match="known: m1"):
        store.get("nope")


def test_killed_run_leaves_no_half_variant(store):
    """SIGKILL a process in the middle of writing a variant: the next Store sees nothing of it."""
    script = textwrap.dedent(f"""
        import os, signal
        from slipstream.store import Store
        store = Store({str(store.home)!r})
        with store.stage("half") as staged:
            (staged / "weights.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert len(list(store.staging_dir.glob("half.*"))) == 2  # the dead process's leftovers: directory and lock
    fresh = Store(store.home)
    assert not fresh.exists("half")
    assert list(fresh.staging_dir.iterdir()) == []
    assert not (fresh.variants_dir / "half").exists()


def test_directory_renamed_but_not_registered_is_recovered(store):
    """A kill between the rename and the registry insert: the manifest rebuilds the row."""
    _commit_dummy(store, "m1")
    store.registry.remove_variant("m1")
    assert not store.exists("m1")
    fresh = Store(store.home)
    assert fresh.exists("m1") and fresh.get("m1").parameters == 3


def test_remove_refuses_parents_with_children(store):
    _commit_dummy(store, "base")
    with store.stage("child") as staged:
        (staged / "w").write_bytes(b"1")
        store.commit(staged, name="child", kind="variant", format="hf", architecture=None, parameters=None,
                     source="t", parent="base")
    with pytest.raises(Exception, match="derive from it"):
        store.remove("base")
    store.remove("child")
    store.remove("base")
    assert store.list() == []


def test_results_round_trip(store):
    _commit_dummy(store, "m1")
    store.add_result("m1", "evaluation", "k1", {"a": 1}, {"perplexity": 12.5}, {"cpu": "x"}, {"torch": "2"})
    row = store.result("m1", "evaluation", "k1")
    assert row.metrics == {"perplexity": 12.5} and row.settings == {"a": 1}
    assert store.result("m1", "evaluation", "other") is None


def test_home_defaults_to_env(tmp_path, monkeypatch, database):
    monkeypatch.setenv("SLIPSTREAM_HOME", str(tmp_path / "h"))
    store = Store()
    assert store.home == (tmp_path / "h").resolve()
    if database is None:  # the SQLite registry lives in the home
        assert os.path.exists(tmp_path / "h" / "registry.sqlite") and store.registry.path == store.home / "registry.sqlite"
    else:  # $SLIPSTREAM_DATABASE_URL names it instead
        assert store.registry.url == database and not os.path.exists(tmp_path / "h" / "registry.sqlite")
