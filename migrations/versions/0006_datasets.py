"""Datasets as a resource: the `datasets` table and `jobs.dataset_id`.

A dataset is uploaded once and any number of jobs run on it. `jobs.dataset_id` holds a
`datasets` row's id or a built-in dataset's name, so it has no foreign key; jobs from before
this migration have none (their upload sits with the job).

Revision ID: 0006_datasets
Revises: 0005_metric_totals
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_datasets"
down_revision: str | None = "0005_metric_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
    )
    op.create_index(op.f("ix_datasets_owner"), "datasets", ["owner"])
    op.create_index(op.f("ix_datasets_created_at"), "datasets", ["created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dataset_id", sa.String(length=64), nullable=True))
        batch.create_index(batch.f("ix_jobs_dataset_id"), ["dataset_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_dataset_id"))
        batch.drop_column("dataset_id")
    op.drop_index(op.f("ix_datasets_created_at"), table_name="datasets")
    op.drop_index(op.f("ix_datasets_owner"), table_name="datasets")
    op.drop_table("datasets")
