"""Tables: `jobs` (the authority on a job's state), `datasets` (uploaded datasets that jobs
run on), `class_reports` (per-class figures), `artifacts` (where a succeeded job's files are
stored) and `api_keys` (hashed client keys; a key's owner owns the jobs and datasets made
with it)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)  # noqa: UP017 (project targets 3.10)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite stores no zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # noqa: UP017
        return value


# Named constraints, so that migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # A string, not a DB enum: adding a status later needs no type migration on PostgreSQL.
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value, index=True)
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The API key owner that created the job; None only for rows from before API keys.
    owner: Mapped[str | None] = mapped_column(Text, index=True)
    # Crash safety: the running worker extends its lease with heartbeats; a lease in the past
    # means the worker died and the job may be re-queued.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(Text)  # host:pid of the last attempt
    # CUDA_VISIBLE_DEVICES of that worker process; None = it saw all GPUs (or none).
    gpu: Mapped[str | None] = mapped_column(Text)
    # When the job's message was last handed to the broker: the sweeper sends it again if no
    # worker claimed the job long after (a broker that lost its messages).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    # The dataset the job runs on: a `datasets` row's id, or a built-in dataset's name
    # (pipeline/builtin_datasets.py), so no foreign key. None: a job from before datasets,
    # whose upload sits with the job (jobs/storage/).
    dataset_id: Mapped[str | None] = mapped_column(String(64), index=True)

    class_reports: Mapped[list[ClassReport]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class Dataset(Base):
    """An uploaded dataset, checked at upload and stored (jobs/storage/) for any number of
    jobs. `summary` is what the upload check found (jobs/dataset_store.py): classes, counts
    per class and split, image sizes and mode, warnings."""

    __tablename__ = "datasets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(Text, index=True)
    name: Mapped[str] = mapped_column(Text)  # the uploaded file's name, for people
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)


class Artifact(Base):
    """One stored output of a succeeded job, written in the same transaction that marks it
    succeeded: its key in the store (jobs/storage/), its size and its SHA-256."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)  # e.g. balanced.zip
    key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class ClassReport(Base):
    __tablename__ = "class_reports"
    __table_args__ = (UniqueConstraint("job_id", "class_name", "method"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    class_name: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(32))
    train_count: Mapped[int] = mapped_column(Integer)
    synthetic_count: Mapped[int] = mapped_column(Integer)
    test_count: Mapped[int] = mapped_column(Integer)
    # Per-class accuracy is the class's recall; None when the class has no test image.
    accuracy: Mapped[float | None] = mapped_column(Float)
    f1: Mapped[float | None] = mapped_column(Float)
    # Every per-class figure the report has, including ones without a column above.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    job: Mapped[Job] = relationship(back_populates="class_reports")


class ApiKey(Base):
    """A client key. Only its SHA-256 is stored: keys are 32 random bytes (256 bits of
    entropy), so nobody can brute-force a preimage and a slow password hash (bcrypt, argon2)
    would only add latency to every request. `prefix` is the key's first characters, shown in
    listings so that a person can tell keys apart without the key."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    prefix: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MetricTotal(Base):
    """Service-wide running totals for /metrics (jobs/metrics.py): a counter, or one
    histogram bucket or sum, per (metric, labels). Kept apart from the job rows so that
    deleting a job never makes a counter go down."""

    __tablename__ = "metric_totals"

    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Canonical JSON of the label values (sorted keys), e.g. {"outcome": "succeeded"}.
    labels: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
