"""Alembic migrations, configured in code so `balancer db upgrade` works from any directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    # configparser treats % as interpolation; escape it in the path.
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    # Passed as an attribute, not an ini option: URLs may hold % and passwords.
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "-1") -> None:
    command.downgrade(alembic_config(database_url), revision)
