"""Shared fixtures: a real SQLite file per test, the real flows, the real engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.core.clock import FakeClock
from engine.core.ports import CredentialProvider
from engine.settings import Settings
from engine.wiring import Wiring, wire

REPO = Path(__file__).resolve().parent.parent
FLOWS = REPO / "flows"


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"DATABASE_URL": f"sqlite:///{tmp_path / 'tertulia.db'}", "FLOWS_DIR": str(FLOWS)}
    return Settings.from_mapping({**base, **env})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_wiring(
    tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[..., Wiring]]:
    """Wire the app on this test's database; env overrides settings."""
    built: list[Wiring] = []

    def factory(provider: CredentialProvider | None = None, **env: str) -> Wiring:
        wiring = wire(make_settings(tmp_path, **env), clock=clock, provider=provider)
        built.append(wiring)
        return wiring

    yield factory
    for wiring in built:
        wiring.close()


@pytest.fixture
def wiring(make_wiring: Callable[..., Wiring]) -> Wiring:
    return make_wiring()


def rows(wiring: Wiring, sql: str, **params: Any) -> list[dict[str, Any]]:
    """What ops would read with sqlite3."""
    with wiring.db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]
