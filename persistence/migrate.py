"""Alembic, driven from code: `tertulia db upgrade`, and the upgrade on start."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

__all__ = ["ALEMBIC_DIR", "alembic_config", "downgrade", "upgrade"]

# Found relative to the package, so commands work from any working directory.
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def alembic_config(url: str) -> Config:
    config = Config(str(ALEMBIC_DIR.parent / "alembic.ini"))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
