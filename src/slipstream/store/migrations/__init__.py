"""The registry's schema, versioned with Alembic: ``versions/`` holds one file per revision, applied in order
by :func:`upgrade` when a registry is opened (see :mod:`slipstream.store.registry`).

Alembic rather than a table of our own: it is the standard migration tool for SQLAlchemy, its operations
emit the right DDL on SQLite and on PostgreSQL (and rebuild SQLite tables where SQLite cannot alter one in
place), and a developer can read and write revisions the usual way. It is only imported when a database is
behind the code's revision, so an everyday open costs one query.

A new revision: a file in ``versions/`` with ``revision``, ``down_revision`` (the previous head),
``upgrade()`` and ``downgrade()``; then move ``registry.HEAD`` to it. Never edit a revision that has shipped.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent


def config(connection: Connection | None = None):
    """Alembic's configuration for these migrations, built in code (no alembic.ini): ``env.py`` runs them on
    ``connection``, inside the transaction the caller has open."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(config(connection), revision)


def downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(config(connection), revision)


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()
