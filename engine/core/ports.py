"""The records the engine core exchanges with its adapters, and the ports it talks to.

The core sees only these: a store that opens serialised transactions, a credential
provider, and a clock (engine.core.clock). persistence/ and channels/ implement them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from engine.core.choices import Choice

__all__ = [
    "CredentialProvider",
    "CredentialRequest",
    "Credentials",
    "Fence",
    "Inbound",
    "Outbound",
    "SessionRecord",
    "Store",
    "StoreTx",
    "TrialRecord",
]

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
    # The id of a tapped quick-reply button or list item (Twilio's ButtonPayload or
    # ListId); `text` then holds the words tapped.
    choice: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to a user; it is a row in `messages` before anyone sends it."""

    id: int
    session_id: int
    channel: str
    phone: str
    body: str
    # The choices offered with this text, and the flow's text key it was rendered from.
    choices: tuple[Choice, ...] = ()
    key: str | None = None


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
    # The engine's own bookkeeping, kept apart from the flow's context: messages not
    # understood in a row, and whether this idle stretch got the warning already.
    misses: int = 0
    warned: bool = False
    # The choices of the latest text that had them, while the session stays in the
    # state they were offered in: a reply may pick one by its number or its words.
    choices: tuple[Choice, ...] = ()
    # The version (a hash) of the flow definition the session runs: see Flow.renamed.
    flow_version: str | None = None

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
    """What a provider receives; `key` (the session id) makes retries idempotent.

    `details` is what the flow's `credential_details` returns for the session (the
    trial flow sends the name and email it collected); the engine adds nothing to it.
    """

    key: str
    phone: str
    now: datetime
    details: Mapping[str, str] = field(default_factory=dict)


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


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease as its holder last saw it. An effect made under the lease checks, in its
    own transaction, that the lease is still this one, so a holder that froze past its
    expiry cannot act once another worker has taken over."""

    name: str
    holder: str
    token: int


class StoreTx(Protocol):
    """One serialised transaction: every write of one inbound message, or of one expiry."""

    def lock_conversations(self, keys: Iterable[tuple[str, str]]) -> None:
        """Hold these (channel, phone) conversations against other workers until commit."""
        ...

    def open_session(self, channel: str, phone: str) -> SessionRecord | None: ...

    def get_session(self, session_id: int, *, wait: bool = True) -> SessionRecord | None:
        """The row, locked; with `wait` False, SessionBusy if another worker holds it."""
        ...

    def holds(self, fence: Fence) -> bool:
        """Whether the lease is still held, by the same holder with the same token."""
        ...

    def create_session(
        self, *, channel: str, phone: str, flow: str, state: str, now: datetime,
        expires_at: datetime, context: dict[str, Any], flow_version: str | None = None,
    ) -> SessionRecord: ...

    def record_inbound(
        self, *, session_id: int, channel: str, message_id: str | None, body: str, now: datetime
    ) -> bool:
        """Insert the inbound row; False when `message_id` was seen before."""
        ...

    def count_inbound(
        self, *, channel: str, phone: str, now: datetime, window: timedelta
    ) -> int:
        """Count one message against the phone's rate window and return how many the
        window holds, this one included. A window starts with the first message after
        the last one ended; the count lives in the database, shared by every worker."""
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
        redacted: str | None = None, key: str | None = None, choices: tuple[Choice, ...] = (),
    ) -> int:
        """Add a pending outbound row; `redacted` replaces the body once sent. `key` is
        the flow's text key, and `choices` what the text offers, for the channel."""
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
