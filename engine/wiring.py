"""The composition root: settings in, wired wiring out. Adapters meet the core here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine as DbEngine

from engine.core.clock import Clock, SystemClock
from engine.core.conversations import Conversations, ConversationSettings
from engine.core.errors import ConfigError, FlowDefinitionError
from engine.core.ports import CredentialProvider
from engine.core.registry import FlowRegistry
from engine.core.unit import OutputLimits
from engine.credentials.local import load_provider
from engine.flowfiles import load_flows, load_flows_leniently
from engine.nlu.loader import load_detector
from engine.settings import Settings
from persistence import migrate
from persistence.db import is_sqlite, make_engine
from persistence.sealing import Sealer
from persistence.store import SqlStore

__all__ = ["Wiring", "wire"]


@dataclass
class Wiring:
    settings: Settings
    db: DbEngine
    store: SqlStore
    flows: FlowRegistry
    conversations: Conversations
    clock: Clock
    # Flow files skipped by a lenient start (the ops commands): each names its file.
    flow_problems: list[FlowDefinitionError] = field(default_factory=list)

    def close(self) -> None:
        self.db.dispose()


def wire(
    settings: Settings, *, clock: Clock | None = None,
    provider: CredentialProvider | None = None, upgrade: bool = True, strict_flows: bool = True,
) -> Wiring:
    """Load flows, open the database and wire the conversations.

    The embedded SQLite is upgraded on start (under its write lock, so workers started
    together do not race); a server database must be upgraded by `tertulia db upgrade`,
    and a worker refuses, in one line, to run on one that is not at head.

    With `strict_flows` False (the ops commands) a broken flow file other than the
    default's is skipped and listed in `flow_problems` instead of stopping everything.
    """
    problems: list[FlowDefinitionError] = []
    if strict_flows:
        flows = load_flows(settings.flows_dir, settings.default_flow)
        _check_content_sids(settings.twilio_content_sids, flows)
    else:
        flows, problems = load_flows_leniently(settings.flows_dir, settings.default_flow)
    db = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
    if upgrade and is_sqlite(settings.database_url):
        migrate.upgrade(settings.database_url)
    elif upgrade:
        migrate.require_head(settings.database_url)
    key = settings.credentials_key
    store = SqlStore(db, sealer=Sealer(key.reveal() if key is not None else None))
    clock = clock or SystemClock()
    conversations = Conversations(
        flows=flows, store=store, clock=clock,
        provider=provider or load_provider(
            settings.credential_provider, trial_duration=settings.trial_duration
        ),
        settings=ConversationSettings(
            session_timeout=settings.session_timeout, session_warning=settings.session_warning,
            trial_cooldown=settings.trial_cooldown,
            rate_limit=settings.rate_limit_messages,
            rate_window=timedelta(seconds=settings.rate_limit_window_seconds),
            max_input_chars=settings.max_input_chars,
            output=OutputLimits(per_turn=settings.max_outbound_per_turn,
                                parts=settings.max_body_parts),
        ),
        detector=load_detector(settings.intent_detector),
    )
    return Wiring(settings, db, store, flows, conversations, clock, problems)


def _check_content_sids(sids: Mapping[str, str], flows: FlowRegistry) -> None:
    """Each TWILIO_CONTENT_SIDS key names a loaded flow's text that offers choices."""
    offered = sorted(f"{flow.name}.{key}" for flow in flows for key in flow.choices)
    for key in sids:
        if key not in offered:
            raise ConfigError("TWILIO_CONTENT_SIDS", key,
                              f"a flow.text whose text offers choices, one of {offered}")
