"""The records the engine core exchanges with its adapters, and the ports it talks to.

The core sees only these: a store that opens serialised transactions, a credential
provider, and a clock (engine.core.clock). persistence/ and channels/ implement them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "CLOSE_REASONS",
    "CredentialProvider",
    "CredentialRequest",
    "Credentials",
    "Inbound",
    "Outbound",
    "SessionRecord",
    "Store",
    "StoreTx",
    "TrialRecord",
]

# close_reason -> the final state it leads to (DESIGN.md, "Tables").
CLOSE_REASONS: dict[str, str] = {
    "credentials_delivered": "closed",
    "trial_refused": "closed",
    "goodbye": "closed",
    "keyword": "closed",
    "admin": "closed",
    "error": "closed",
    "cancelled": "cancelled",
    "timeout": "timeout",
}


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a user, as a channel adapter parsed it."""

    channel: str
    phone: str
    text: str
    message_id: str | None = None
    profile_name: str | None = None
    kind: str = "text"  # text | media | location | other: only text is read for now
    # The flow a new session starts in (a loaded flow's name); None: the default flow.
    # Ignored while a session is open. The web console's simulator sets it.
    flow: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to a user; it is a row in `messages` before anyone sends it."""

    id: int
    session_id: int
    channel: str
    phone: str
    body: str


@dataclass(slots=True)
class SessionRecord:
    """A conversation's row in `sessions`: the single source of truth for its state."""

    id: int
    channel: str
    phone: str
    flow: str
    state: str
    started_at: datetime
    last_inbound_at: datetime
    expires_at: datetime
    version: int
    context: dict[str, Any] = field(default_factory=dict)
    closed_at: datetime | None = None
    close_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True, slots=True)
class TrialRecord:
    phone: str
    username: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """What a provider needs; `key` (the session id) makes retries idempotent."""

    key: str
    phone: str
    name: str
    email: str
    now: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    expires_at: datetime
    login_url: str = ""


class CredentialProvider(Protocol):
    def issue(self, request: CredentialRequest) -> Credentials:
        """Create (or return the already created) account for `request.key`."""
        ...


class StoreTx(Protocol):
    """One serialised transaction: every write of one inbound message, or of one expiry."""

    def open_session(self, channel: str, phone: str) -> SessionRecord | None: ...

    def get_session(self, session_id: int) -> SessionRecord | None: ...

    def create_session(
        self, *, channel: str, phone: str, flow: str, state: str, now: datetime,
        expires_at: datetime, context: dict[str, Any],
    ) -> SessionRecord: ...

    def record_inbound(
        self, *, session_id: int, channel: str, message_id: str | None, body: str, now: datetime
    ) -> bool:
        """Insert the inbound row; False when `message_id` was seen before."""
        ...

    def save_session(self, record: SessionRecord, *, read_version: int) -> bool:
        """Write the row back, bumping `version`; False when someone wrote it since."""
        ...

    def add_event(
        self, *, session_id: int, from_state: str | None, to_state: str, trigger: str,
        detail: str | None, at: datetime,
    ) -> None: ...

    def enqueue(
        self, *, session_id: int, channel: str, body: str, now: datetime,
        redacted: str | None = None,
    ) -> int:
        """Add a pending outbound row; `redacted` replaces the body once sent."""
        ...

    def latest_trial(self, phone: str) -> TrialRecord | None: ...

    def add_trial(self, trial: TrialRecord, *, session_id: int) -> None: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """Undo only what happens inside if it raises; the transaction goes on."""
        ...


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[StoreTx]:
        """Commit on a clean exit, roll back on an exception; serialised per session."""
        ...
