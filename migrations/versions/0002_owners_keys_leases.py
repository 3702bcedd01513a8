"""API keys, job owners, and job leases.

- `api_keys`: client keys, stored only as SHA-256 hex digests. Keys are 32 random bytes
  (`secrets.token_urlsafe(32)`), so a fast hash is right: there is no guessable preimage to
  slow down, and a slow password hash (bcrypt, argon2) would only add latency to every request.
- `jobs.owner`: the owner of the key that created the job (NULL for rows from before keys).
- `jobs.lease_expires_at`, `jobs.heartbeat_at`, `jobs.worker_id`: crash-safe job state; a
  running job's worker renews its lease, and an expired lease means the worker died.

Revision ID: 0002_owners_keys_leases
Revises: 0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_owners_keys_leases"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    # batch_alter_table: on SQLite it rebuilds the table where ALTER TABLE falls short (the
    # downgrade's DROP COLUMN); on PostgreSQL it issues plain ALTER TABLE statements.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.Text(), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker_id", sa.Text(), nullable=True))
        batch.create_index(batch.f("ix_jobs_owner"), ["owner"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_owner"))
        batch.drop_column("worker_id")
        batch.drop_column("heartbeat_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
    op.drop_table("api_keys")
