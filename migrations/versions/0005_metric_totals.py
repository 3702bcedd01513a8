"""metric_totals: service-wide counters and histogram buckets for GET /metrics.

Written when a job ends (jobs/metrics.py); read at every scrape. Empty at first: totals
start counting from this migration on.

Revision ID: 0005_metric_totals
Revises: 0004_artifacts_worker_gpu
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_metric_totals"
down_revision: str | None = "0004_artifacts_worker_gpu"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_totals",
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("metric", "labels", name="pk_metric_totals"),
    )


def downgrade() -> None:
    op.drop_table("metric_totals")
