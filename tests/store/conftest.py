"""Every test of the store runs twice: on the SQLite registry in the store's home, and on a fresh database of
the session's PostgreSQL server (skipped, with the reason, where PostgreSQL is not installed). A test marked
``sqlite_only`` (the SQLite file itself: its pragmas, a file from before the migrations) runs once."""

from __future__ import annotations

import pytest

from slipstream.store.registry import DATABASE_URL_ENV


def pytest_generate_tests(metafunc):
    if "database" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("database", ["sqlite"] if sqlite_only else ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def database(request, monkeypatch) -> str | None:
    """None on SQLite (each store's own ``registry.sqlite``), else the PostgreSQL URL every store of the test
    uses (``$SLIPSTREAM_DATABASE_URL``, which processes the test starts inherit)."""
    if request.param == "sqlite":
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
        return None
    return request.getfixturevalue("postgresql_url")


@pytest.fixture
def registry(database, tmp_path):
    """A Registry on the test's database: a new SQLite file, or the PostgreSQL database."""
    from slipstream.store.registry import Registry

    return Registry(database or tmp_path / "registry.sqlite")
