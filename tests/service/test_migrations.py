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
from app.models import Base

from .conftest import python_path

TABLES = {"jobs", "class_reports", "alembic_version"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
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
    assert drift == [], "the migrations and app/models.py disagree"

    migrations.downgrade(empty_db_url, "base")
    assert tables_and_drift(empty_db_url)[0] == {"alembic_version"}

    migrations.upgrade(empty_db_url)
    tables, drift = tables_and_drift(empty_db_url)
    assert tables == TABLES and drift == []


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
