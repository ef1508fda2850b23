"""The platform's jobs and their append-only events.

``jobs.seq`` orders jobs (``created`` is in whole seconds); ``jobs.id`` is the uuid4 hex the API shows.
``job_events.id`` increases with every event (server-sent events resume from it).

Revision ID: 0002_jobs
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_jobs"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("progress", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("updated", sa.Text, nullable=False),
        sa.Column("started", sa.Text),
        sa.Column("finished", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("worker", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("jobs_state", "jobs", ["state", "seq"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Text, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("job_events_by_job", "job_events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("job_events_by_job", table_name="job_events")
    op.drop_table("job_events")
    op.drop_index("jobs_state", table_name="jobs")
    op.drop_table("jobs")
