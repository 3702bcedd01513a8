"""Alembic: upgrade an empty database, downgrade to base, upgrade again; the result must
match the SQLAlchemy models exactly. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import migrations
from jobs.models import Base

from .conftest import python_path

TABLES = {
    "jobs",
    "datasets",
    "class_reports",
    "artifacts",
    "api_keys",
    "metric_totals",
    "alembic_version",
}


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.service, pytest.mark.slow])]
)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("pg_database")("migrations")


def tables_and_drift(url: str) -> tuple[set[str], list]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return set(sa.inspect(conn).get_table_names()), compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    migrations.upgrade(empty_db_url)
    tables, drift = tables_and_drift(empty_db_url)
    assert tables == TABLES
    assert drift == [], "the migrations and jobs/models.py disagree"

    migrations.downgrade(empty_db_url, "base")
    assert tables_and_drift(empty_db_url)[0] == {"alembic_version"}

    migrations.upgrade(empty_db_url)
    tables, drift = tables_and_drift(empty_db_url)
    assert tables == TABLES and drift == []


@pytest.mark.slow
def test_cli_db_upgrade_works_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env |= {"BALANCER_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": python_path()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (["upgrade"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "db", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    url = f"sqlite:///{tmp_path / 'data' / 'balancer.db'}"
    assert tables_and_drift(url) == (TABLES, [])


NEW_JOB_COLUMNS = {"owner", "lease_expires_at", "heartbeat_at", "worker_id"}


def job_columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
    finally:
        engine.dispose()


def test_0002_up_down_up_keeps_existing_jobs(empty_db_url: str) -> None:
    migrations.upgrade(empty_db_url, "0001")
    engine = sa.create_engine(empty_db_url)
    insert = sa.text(
        "INSERT INTO jobs (id, status, progress, config, created_at, attempts, cancel_requested) "
        "VALUES (:id, 'succeeded', 1.0, '{}', CURRENT_TIMESTAMP, 1, false)"
    )
    job_id = "0b7e0d525c4f4c599d0e3f1c1f0f2a11"
    try:
        with engine.begin() as conn:
            conn.execute(insert, {"id": job_id})
        migrations.upgrade(empty_db_url, "0002_owners_keys_leases")
        assert job_columns(empty_db_url) >= NEW_JOB_COLUMNS
        with engine.connect() as conn:
            owner = conn.execute(sa.text("SELECT owner FROM jobs")).scalar_one()
        assert owner is None, "a job from before keys has no owner"

        migrations.downgrade(empty_db_url, "0001")
        assert not NEW_JOB_COLUMNS & job_columns(empty_db_url)
        assert tables_and_drift(empty_db_url)[0] == {"jobs", "class_reports", "alembic_version"}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 1

        migrations.upgrade(empty_db_url)
        assert tables_and_drift(empty_db_url) == (TABLES, [])
    finally:
        engine.dispose()
