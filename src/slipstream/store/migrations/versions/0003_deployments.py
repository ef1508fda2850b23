"""The platform's deployments: a spec, how it runs, its state and where it answers.

Revision ID: 0003_deployments
Revises: 0002_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_deployments"
down_revision = "0002_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("runtime", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("updated", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("deployments_state", "deployments", ["state", "seq"])


def downgrade() -> None:
    op.drop_index("deployments_state", table_name="deployments")
    op.drop_table("deployments")
