"""One user's conversation with the engine in process, through `Conversations` on any
Store: what they write goes in as an Inbound, the replies come back as texts."""

from __future__ import annotations

from collections.abc import Callable

from engine.core.clock import Clock
from engine.core.conversations import Conversations
from engine.core.ports import CredentialProvider, Inbound, Store
from engine.credentials.local import LocalCredentialProvider
from engine.flowfiles import load_flows
from tests.support.paths import FLOWS

__all__ = ["PHONE", "Chat", "conversations_on"]

PHONE = "+5491123456789"


def conversations_on(
    store: Store, clock: Clock, provider: CredentialProvider | None = None
) -> Conversations:
    """The engine with the shipped flows (trial by default) on `store`."""
    return Conversations(flows=load_flows(FLOWS, "trial"), store=store, clock=clock,
                         provider=provider or LocalCredentialProvider())


class Chat:
    """Sends texts as one phone, each with a fresh message id."""

    def __init__(self, conversations: Conversations, phone: str = PHONE,
                 channel: str = "whatsapp") -> None:
        self.conversations = conversations
        self.phone = phone
        self.channel = channel
        self.sent = 0

    def inbound(self, text: str, *, profile_name: str | None = None) -> Inbound:
        self.sent += 1
        return Inbound(channel=self.channel, phone=self.phone, text=text,
                       message_id=f"SM{self.phone[1:]}{self.sent:06d}",
                       profile_name=profile_name)

    def send(self, text: str, *, profile_name: str | None = None,
             later: Callable[[Callable[[], object]], object] | None = None) -> list[str]:
        """The replies to `text`; with `later`, credentials are issued when it says, as
        the server's writer thread does, instead of inline."""
        inbound = self.inbound(text, profile_name=profile_name)
        [outbound] = self.conversations.handle_many([inbound], later=later)
        return [o.body for o in outbound]
