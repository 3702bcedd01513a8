"""Object storage and many GPUs: `artifacts` and `jobs.gpu`.

- `artifacts`: one row per stored output of a succeeded job (its key in the store, size and
  SHA-256), written in the transaction that marks the job succeeded.
- `jobs.gpu`: CUDA_VISIBLE_DEVICES of the worker process that ran the last attempt (beside
  `jobs.worker_id`, its host:pid).

Revision ID: 0004_artifacts_worker_gpu
Revises: 0003_job_enqueued_at
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_artifacts_worker_gpu"
down_revision: str | None = "0003_job_enqueued_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("job_id", "name", name=op.f("uq_artifacts_job_id_name")),
    )
    op.create_index(op.f("ix_artifacts_job_id"), "artifacts", ["job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpu", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("gpu")
    op.drop_index(op.f("ix_artifacts_job_id"), table_name="artifacts")
    op.drop_table("artifacts")
