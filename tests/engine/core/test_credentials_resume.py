"""Nobody loses their credentials to a timeout: a session waiting for them is not idle.

- slow provider: the issue outlives the session's timeout; the timeout must not close
  the session (which left an account issued that the user never received), and the
  credentials arrive once the provider answers;
- crashed mid-issue: nothing is under way any more; the timeout asks the provider again
  (keyed by the session, so idempotent) and delivers, instead of the inactivity notice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta

from engine.core.clock import FakeClock
from engine.core.conversations import WHATSAPP_WINDOW
from engine.core.flow import BASE_TEXTS
from engine.core.ports import CredentialRequest, Credentials
from engine.credentials.local import LocalCredentialProvider
from tests.support.chat import Chat, conversations_on
from tests.support.stores import Backend
from tests.support.trial import text_of

PAST_TIMEOUT = timedelta(minutes=3, seconds=1)  # the default SESSION_TIMEOUT, and a bit


class _Crash(BaseException):
    """The process died mid-issue: nothing of ours catches it."""


class Provider:
    """The local generator, remembering who asked and what it gave; can crash once."""

    def __init__(self, *, crash_first: bool = False) -> None:
        self.crash_first = crash_first
        self.asked: list[str] = []
        self.issued: list[Credentials] = []
        self.local = LocalCredentialProvider()

    def issue(self, request: CredentialRequest) -> Credentials:
        self.asked.append(request.key)
        if self.crash_first and len(self.asked) == 1:
            raise _Crash
        creds = self.local.issue(request)
        self.issued.append(creds)
        return creds


def _at_credentials(chat: Chat, later: Callable[[Callable[[], object]], object] | None
                    ) -> None:
    for text in ("hola", "sí", "Juan"):
        chat.send(text)
    chat.send("juan@mail.com", later=later)


def _credentials_text(creds: Credentials) -> str:
    return text_of("credentials", name="Juan", username=creds.username,
                   password=creds.password,
                   expires=f"{creds.expires_at:%d/%m/%Y %H:%M} UTC", login_url=creds.login_url)


def test_a_slow_issue_outlives_the_timeout_and_is_delivered(backend: Backend,
                                                             clock: FakeClock) -> None:
    provider = Provider()
    conversations = conversations_on(backend.store, clock, provider)
    chat = Chat(conversations)
    pending: list[Callable[[], object]] = []
    _at_credentials(chat, pending.append)
    [session] = backend.rows("sessions")

    clock.advance(PAST_TIMEOUT)  # the provider is still working
    later = conversations.expire(session["id"])

    # Not closed, no inactivity notice: the timeout comes back later instead.
    assert later == clock.now() + timedelta(minutes=3)
    assert backend.select("sessions", "state", "closed_at") == [("credentials", None)]
    assert BASE_TEXTS["timeout_notice"] not in [m["body"] for m in backend.rows("messages")]
    # The provider answers: the user gets the login it issued.
    delivered = pending[0]()
    [creds] = provider.issued
    assert isinstance(delivered, list)
    assert [o.body for o in delivered] == [_credentials_text(creds), text_of("closing")]
    assert backend.select("sessions", "state", "close_reason") == [
        ("closed", "credentials_delivered")]
    assert provider.asked == [str(session["id"])]  # the timeout did not ask a second time
    assert backend.select("trials", "username") == [(creds.username,)]


def test_a_timeout_after_a_crash_mid_issue_delivers_instead_of_the_notice(
    backend: Backend, clock: FakeClock
) -> None:
    provider = Provider(crash_first=True)
    chat = Chat(conversations_on(backend.store, clock, provider))
    with contextlib.suppress(_Crash):
        _at_credentials(chat, None)
    # The process that crashed is gone; a new one (same database) runs the timeout.
    conversations = conversations_on(backend.store, clock, provider)
    [session] = backend.rows("sessions")
    clock.advance(PAST_TIMEOUT)
    assert conversations.expire(session["id"]) is not None

    [creds] = provider.issued
    out = [m["body"] for m in backend.rows("messages") if m["direction"] == "out"]
    hidden = _credentials_text(creds).replace(creds.password, "••••••••")
    assert out[-2:] == [hidden, text_of("closing")]
    assert BASE_TEXTS["timeout_notice"] not in out
    assert provider.asked == [str(session["id"])] * 2  # the same key: idempotent
    assert backend.select("sessions", "close_reason") == [("credentials_delivered",)]


def test_outside_the_whatsapp_window_a_pending_issue_times_out(backend: Backend,
                                                               clock: FakeClock) -> None:
    provider = Provider(crash_first=True)
    chat = Chat(conversations_on(backend.store, clock, provider))
    with contextlib.suppress(_Crash):
        _at_credentials(chat, None)
    conversations = conversations_on(backend.store, clock, provider)
    [session] = backend.rows("sessions")
    clock.advance(WHATSAPP_WINDOW)
    assert conversations.expire(session["id"]) is None
    assert backend.select("sessions", "state", "close_reason") == [("timeout", "timeout")]
    assert provider.asked == [str(session["id"])]
