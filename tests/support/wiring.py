"""The app wired in process on one test's SQLite file, and rows as ops read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from engine.settings import Settings
from engine.wiring import Wiring
from tests.support.paths import FLOWS

__all__ = ["make_settings", "rows"]


def make_settings(tmp_path: Path, **env: str) -> Settings:
    """Settings on `tmp_path/tertulia.db` and the real flows; `env` overrides."""
    base = {"DATABASE_URL": f"sqlite:///{tmp_path / 'tertulia.db'}", "FLOWS_DIR": str(FLOWS)}
    return Settings.from_mapping({**base, **env})


def rows(wiring: Wiring, sql: str, **params: Any) -> list[dict[str, Any]]:
    """What ops would read with sqlite3."""
    with wiring.db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]
