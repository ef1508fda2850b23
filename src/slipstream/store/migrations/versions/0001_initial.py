"""The registry as the sqlite3 code made it: variants and results.

A database written before the migrations (``PRAGMA user_version = 1``) already has these tables: they are
kept as they are, rows and all, and only the revision is recorded.

Revision ID: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def name_type() -> sa.types.TypeEngine:
    # Names sort byte by byte on both databases (PostgreSQL's default collation follows the locale).
    from sqlalchemy.dialects import postgresql

    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("variants"):
        op.create_table(
            "variants",
            sa.Column("name", name_type(), primary_key=True),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("format", sa.Text, nullable=False),
            sa.Column("architecture", sa.Text),
            sa.Column("parameters", sa.BigInteger().with_variant(sa.Integer, "sqlite")),
            sa.Column("size_bytes", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
            sa.Column("sha256", sa.Text, nullable=False),
            sa.Column("source", sa.Text),
            sa.Column("parent", name_type()),
            sa.Column("technique", sa.Text),
            sa.Column("device", sa.Text),
            sa.Column("path", sa.Text, nullable=False),
            sa.Column("created", sa.Text, nullable=False),
        )
    if not inspector.has_table("results"):
        op.create_table(
            "results",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("variant", name_type(), nullable=False),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("key", sa.Text, nullable=False),
            sa.Column("settings", sa.Text, nullable=False),
            sa.Column("metrics", sa.Text, nullable=False),
            sa.Column("machine", sa.Text, nullable=False),
            sa.Column("versions", sa.Text, nullable=False),
            sa.Column("created", sa.Text, nullable=False),
            sqlite_autoincrement=True,
        )
    if "results_lookup" not in {i["name"] for i in inspector.get_indexes("results")}:
        op.create_index("results_lookup", "results", ["variant", "kind", "key"])


def downgrade() -> None:
    op.drop_index("results_lookup", table_name="results")
    op.drop_table("results")
    op.drop_table("variants")
