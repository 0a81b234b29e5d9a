"""`tertulia chat`: talk to a flow in the terminal, through the real store.

It reads stdin line by line, so it can be scripted: `printf 'hola\\n' | tertulia chat`.
Replies are outbox rows on channel `console`; this channel prints and marks them, so a
notice written by another process (a timeout, `sessions close`) shows up here too.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from engine.core.choices import numbered
from engine.core.conversations import Conversations
from engine.core.ports import Inbound
from persistence.outbox import deliver_console
from persistence.queries import latest_session
from persistence.store import SqlStore

__all__ = ["ConsoleChat"]

CHANNEL = "console"
HELP = ("Comandos: /state (estado actual), /reset (empezar de cero), /quit (salir). "
        "Ante opciones numeradas, respondé con su número.")


class ConsoleChat:
    """One terminal conversation for one phone."""

    def __init__(
        self, conversations: Conversations, store: SqlStore, phone: str, *,
        out: TextIO = sys.stdout, profile_name: str | None = None, flow: str | None = None,
    ) -> None:
        self.conversations = conversations
        self.store = store
        self.phone = phone
        self.out = out
        self.profile_name = profile_name
        # The flow a new session starts in; None: DEFAULT_FLOW.
        self.flow = flow
        self._print_lock = threading.Lock()
        self._last_state: str | None = None
        self._last_session: int | None = None

    def run(self, lines: Iterable[str], prompt: Callable[[], None] = lambda: None) -> None:
        flow = self.flow or self.conversations.flows.default_name
        self._say(f"tertulia chat · flujo {flow} · {self.phone}")
        self._say(HELP)
        self._remember_state()
        prompt()
        for raw in lines:
            line = raw.strip()
            if line == "/quit":
                break
            if line:
                self._handle(line)
            prompt()
        self._say("¡Hasta luego!")

    def _handle(self, line: str) -> None:
        if line == "/state":
            self._show_state()
        elif line == "/reset":
            self._reset()
        elif line.startswith("/"):
            self._say(f"Comando desconocido: {line}. {HELP}")
        else:
            # A number picks one of the choices just offered: the engine reads it so.
            self.conversations.handle(Inbound(channel=CHANNEL, phone=self.phone, text=line,
                                              profile_name=self.profile_name, flow=self.flow))
            self.flush()

    @contextlib.contextmanager
    def watching(self, every: float = 0.5) -> Iterator[None]:
        """Print notices that arrive while the user is idle (timeouts, ops closes)."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(every):
                try:
                    self.flush()
                except Exception:  # a locked database now is fine: poll again shortly
                    continue

        thread = threading.Thread(target=poll, name="console-notices", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=2)
            self.flush()

    def flush(self) -> None:
        """Print pending bot messages, then any state change."""
        with self._print_lock:
            for message in deliver_console(self.store, self.phone, self.conversations.clock.now()):
                self._say(f"🤖 {numbered(message.body, message.choices)}")
            self._report_state()

    def _remember_state(self) -> None:
        session = latest_session(self.store, CHANNEL, self.phone)
        if session is not None:
            self._last_session, self._last_state = session.id, session.state

    def _report_state(self) -> None:
        session = latest_session(self.store, CHANNEL, self.phone)
        if session is None:
            return
        if (session.id, session.state) != (self._last_session, self._last_state):
            before = self._last_state if session.id == self._last_session else None
            arrow = (f"{before} → {session.state}" if before
                     else f"nueva sesión #{session.id}: {session.state}")
            reason = f" ({session.close_reason})" if session.close_reason else ""
            self._say(f"   [{arrow}{reason}]")
        self._last_session, self._last_state = session.id, session.state

    def _show_state(self) -> None:
        session = latest_session(self.store, CHANNEL, self.phone)
        if session is None or not session.is_open:
            self._say("   [sin sesión abierta: tu próximo mensaje empieza una nueva]")
            return
        left = (session.expires_at - self.conversations.clock.now()).total_seconds()
        self._say(f"   [sesión #{session.id} · flujo {session.flow} · estado {session.state}"
                  f" · vence en {max(0, int(left))} s]")

    def _reset(self) -> None:
        session = latest_session(self.store, CHANNEL, self.phone)
        if session is not None and session.is_open:
            self.conversations.close(session.id, notify=False)
        self._say("   [sesión reiniciada: tu próximo mensaje empieza de cero]")
        self._remember_state()

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)
