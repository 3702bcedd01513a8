"""jobs.enqueued_at: when the job's message was last handed to the broker.

The sweeper (jobs/sweeper.py) sends a queued job's message again when no worker claimed it
long after this time. NULL (rows from before) means "unknown": such a job is sent again at the
next sweep, which is harmless, since claims are guarded.

Revision ID: 0003_job_enqueued_at
Revises: 0002_owners_keys_leases
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_job_enqueued_at"
down_revision: str | None = "0002_owners_keys_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enqueued_at")
