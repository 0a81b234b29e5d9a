"""Leaving while credentials are pending: the user's cancel or goodbye wins, and the
credentials that were being issued are never delivered.

Pending two ways, each after the email moved the session to `credentials`:
- in flight: the issue was handed to `later` (as the server's writer thread does)
  and finishes only after the user left;
- crashed: the provider blew up in a way that leaves no trace (a crash between the
  two transactions), so nothing will finish it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.core.clock import FakeClock
from engine.core.flow import BASE_TEXTS
from engine.core.ports import CredentialRequest, Credentials
from engine.credentials.local import LocalCredentialProvider
from tests.support.chat import Chat, conversations_on
from tests.support.stores import Backend
from tests.support.trial import text_of

LEAVE = {
    # what the user writes: (final state, close_reason, trigger, the reply)
    "cancel": ("no quiero seguir", "cancelled", "cancelled", "cancel", BASE_TEXTS["cancelled"]),
    "goodbye": ("chau", "closed", "goodbye", "goodbye", BASE_TEXTS["goodbye"]),
}
ASKED = [text_of("greeting", saludo_nombre=""), text_of("ask_name"),
         text_of("ask_email", name="Juan")]


class _Interrupted(BaseException):
    """A crash: nothing of ours catches it."""


class Provider:
    """The local generator, which records who asked and can crash instead."""

    def __init__(self, *, crash: bool) -> None:
        self.crash = crash
        self.asked: list[str] = []
        self.local = LocalCredentialProvider()

    def issue(self, request: CredentialRequest) -> Credentials:
        self.asked.append(request.key)
        if self.crash:
            raise _Interrupted
        return self.local.issue(request)


def _to_credentials(chat: Chat, pending: list[Callable[[], object]], crash: bool) -> None:
    assert [chat.send(text) for text in ("hola", "sí", "Juan")] == [[t] for t in ASKED]
    if crash:
        with pytest.raises(_Interrupted):
            chat.send("juan@mail.com")
    else:
        assert chat.send("juan@mail.com", later=pending.append) == []
        assert len(pending) == 1


@pytest.mark.parametrize("how", ["in_flight", "crashed"])
@pytest.mark.parametrize("leave", LEAVE.values(), ids=LEAVE)
def test_leaving_while_credentials_are_pending_closes_and_delivers_nothing(
    backend: Backend, clock: FakeClock, how: str, leave: tuple[str, ...]
) -> None:
    text, state, reason, trigger, reply = leave
    provider = Provider(crash=how == "crashed")
    chat = Chat(conversations_on(backend.store, clock, provider))
    pending: list[Callable[[], object]] = []
    _to_credentials(chat, pending, crash=provider.crash)
    [session] = backend.rows("sessions")
    assert (session["state"], session["closed_at"]) == ("credentials", None)

    assert chat.send(text) == [reply]
    if pending:
        assert pending[0]() == []  # the issue under way ends, and says nothing

    assert provider.asked == [str(session["id"])]
    assert backend.select("sessions", "id", "state", "close_reason") == [
        (session["id"], state, reason)]
    assert backend.rows("sessions")[0]["closed_at"] == clock.now()
    assert backend.select("session_events", "from_state", "to_state", "trigger")[-2:] == [
        ("trial_request", "credentials", "take_email"), ("credentials", state, trigger)]
    assert backend.rows("trials") == []
    messages = backend.rows("messages")
    assert [m["body"] for m in messages if m["direction"] == "in"] == [
        "hola", "sí", "Juan", "juan@mail.com", text]
    assert [m["body"] for m in messages if m["direction"] == "out"] == [*ASKED, reply]


def test_after_leaving_a_new_message_starts_over_without_a_trial(
    backend: Backend, clock: FakeClock
) -> None:
    provider = Provider(crash=False)
    chat = Chat(conversations_on(backend.store, clock, provider))
    pending: list[Callable[[], object]] = []
    _to_credentials(chat, pending, crash=False)
    chat.send("cancelar")
    pending[0]()
    # The trial was never delivered, so asking again is not refused by the cooldown.
    assert chat.send("hola") == [ASKED[0]]
    assert chat.send("quiero la prueba") == [ASKED[1]]
    assert backend.select("sessions", "state", "close_reason") == [
        ("cancelled", "cancelled"), ("trial_request", None)]
