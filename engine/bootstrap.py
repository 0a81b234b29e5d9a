"""The composition root: settings in, wired services out. Adapters meet the core here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine as DbEngine

from engine.clock import Clock, SystemClock
from engine.config import Settings
from engine.credentials import load_provider
from engine.loader import FlowRegistry, load_flows
from engine.ports import CredentialProvider
from engine.runtime import Engine, EngineSettings
from persistence import migrate
from persistence.db import is_sqlite, make_engine
from persistence.store import SqlStore

__all__ = ["Services", "build"]


@dataclass
class Services:
    settings: Settings
    db: DbEngine
    store: SqlStore
    flows: FlowRegistry
    engine: Engine
    clock: Clock

    def close(self) -> None:
        self.db.dispose()


def build(
    settings: Settings, *, clock: Clock | None = None,
    provider: CredentialProvider | None = None, upgrade: bool = True,
) -> Services:
    """Load flows, open (and on SQLite upgrade) the database, and wire the engine."""
    flows = load_flows(settings.flows_dir, settings.default_flow)
    db = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
    if upgrade and is_sqlite(settings.database_url):
        migrate.upgrade(settings.database_url)
    store = SqlStore(db)
    clock = clock or SystemClock()
    engine = Engine(
        flows=flows, store=store, clock=clock,
        provider=provider or load_provider(
            settings.credential_provider, trial_duration=settings.trial_duration
        ),
        settings=EngineSettings(
            session_timeout=settings.session_timeout, session_warning=settings.session_warning,
            trial_cooldown=settings.trial_cooldown,
        ),
    )
    return Services(settings, db, store, flows, engine, clock)
