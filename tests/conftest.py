"""Shared fixtures: a real SQLite file per test, the real flows, the real engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.bootstrap import Services, build
from engine.clock import FakeClock
from engine.config import Settings
from engine.ports import CredentialProvider

REPO = Path(__file__).resolve().parent.parent
FLOWS = REPO / "flows"


def make_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"DATABASE_URL": f"sqlite:///{tmp_path / 'tertulia.db'}", "FLOWS_DIR": str(FLOWS)}
    return Settings.from_mapping({**base, **env})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_services(
    tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[..., Services]]:
    """Build wired services on this test's database; env overrides settings."""
    built: list[Services] = []

    def factory(provider: CredentialProvider | None = None, **env: str) -> Services:
        services = build(make_settings(tmp_path, **env), clock=clock, provider=provider)
        built.append(services)
        return services

    yield factory
    for services in built:
        services.close()


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()


def rows(services: Services, sql: str, **params: Any) -> list[dict[str, Any]]:
    """What ops would read with sqlite3."""
    with services.db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]
