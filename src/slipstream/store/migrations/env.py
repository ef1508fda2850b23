"""Alembic's entry point: run the migrations on the connection the registry passed in (its transaction is
already open and under a lock, so Alembic neither begins nor commits one itself)."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("slipstream's migrations run from slipstream.store.migrations.upgrade(connection)")
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
