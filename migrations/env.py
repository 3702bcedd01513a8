"""Alembic environment: the URL comes from the caller (migrations.alembic_config) or from
Settings (BALANCER_DATABASE_URL), never from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from jobs.db import make_engine
from jobs.models import Base
from jobs.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return url
    settings = get_settings()
    settings.ensure_dirs()  # the default SQLite file lives in the data dir
    return settings.database_url


def run_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite can't ALTER most things; batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
