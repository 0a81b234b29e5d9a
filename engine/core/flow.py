"""The flow DSL that flow authors subclass, and the compiled form the engine runs.

A flow file reads top to bottom: states, texts, the transition table (data), then one
small step function per open state. engine.core.compile checks it (engine.core.flowcheck)
and builds one `transitions` Machine per flow class, never one per conversation.
"""

from __future__ import annotations

import hashlib
import inspect
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from transitions import Machine, MachineError

from engine.core.choices import Choice
from engine.core.errors import FlowDefinitionError
from engine.core.intents import Intents
from engine.core.ports import Credentials, TrialRecord

__all__ = [
    "BASE_TEXTS",
    "ENGINE_CLOSE_REASONS",
    "ENGINE_TRIGGERS",
    "ENGINE_VALUES",
    "CompiledFlow",
    "Decision",
    "Flow",
    "Route",
    "StepFn",
    "Timeout",
    "Turn",
    "flow_version",
    "placeholders",
    "step",
]

# Texts the engine itself sends; a flow may override any of them in its `texts`.
BASE_TEXTS: dict[str, str] = {
    "goodbye": "¡Gracias por escribirnos! Cuando quieras, acá estamos. 👋",
    "cancelled": "Listo, cancelamos todo. Si cambiás de idea, escribinos cuando quieras.",
    "apology": (
        "Perdón, tuvimos un problema de nuestro lado y no pudimos seguir. 😔 "
        "Escribinos de nuevo en un rato y arrancamos otra vez."
    ),
    "timeout_notice": (
        "Cerramos tu sesión por inactividad. Escribinos cuando quieras para empezar de nuevo."
    ),
    "warning": "¿Seguís ahí? Si no nos escribís en un ratito, vamos a cerrar la sesión.",
    "admin_closed": "Cerramos esta conversación. Escribinos cuando quieras para empezar de nuevo.",
    "not_understood": "Perdón, no te entendí. 🤔",
    "options": "Podés escribir *cancelar* para dejarlo acá, o *chau* para despedirte.",
    "media_only": (
        "Por ahora solo leo mensajes de texto. 🙏 ¿Me lo escribís, por favor?"
    ),
    "flow_changed": (
        "Actualizamos este servicio y no pudimos retomar tu conversación donde estaba. 🙏 "
        "Escribinos de nuevo y empezamos otra vez."
    ),
    "slow_down": (
        "Estás escribiendo muy rápido. 🙏 Esperá un minuto y seguimos: hasta entonces no "
        "vamos a responder."
    ),
}

# Values the engine itself adds to every text's placeholders. None so far: a text gets
# the session's context and the values its step passed; `flows check` knows both.
ENGINE_VALUES: frozenset[str] = frozenset()

# Closes the engine performs in any open state: trigger -> (final state, reason, texts).
ENGINE_TRIGGERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "goodbye": ("closed", "goodbye", ("goodbye",)),
    "cancel": ("cancelled", "cancelled", ("cancelled",)),
    "expire": ("timeout", "timeout", ("timeout_notice",)),
    "fail": ("closed", "error", ("apology",)),
    "admin_close": ("closed", "admin", ("admin_closed",)),
    "keyword_close": ("closed", "keyword", ()),
}

# The engine's own close reasons -> the final state each leads to. Any other reason is
# declared by the flow whose transitions write it (Flow.close_reasons). flow_changed and
# flow_removed close a session whose state, or whole flow, no file defines any more.
ENGINE_CLOSE_REASONS: dict[str, str] = {
    **{reason: dest for dest, reason, _ in ENGINE_TRIGGERS.values()},
    "flow_changed": "closed",
    "flow_removed": "closed",
}
# Written by the outbox, not a transition, in flows that issue credentials: their message
# never arrived, so the session does not count as a delivered trial (persistence/outbox.py).
UNDELIVERED_REASON = ("credentials_undelivered", "closed")

F = TypeVar("F", bound=Callable[..., "Decision"])


def step(state: str) -> Callable[[F], F]:
    """Mark a Flow method as the step that handles a message in `state`."""

    def mark(fn: F) -> F:
        fn.__tertulia_step__ = state  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True, slots=True)
class Timeout:
    """A state's own inactivity timeout: after `after` without a message, fire `trigger`.

    The trigger's transition need not close: `Timeout(timedelta(minutes=10), "remind")`
    can send a reminder and move on to another state, which has its own timeout or the
    default (SESSION_TIMEOUT_MINUTES). "expire" is the engine's timeout close.
    """

    after: timedelta
    trigger: str = "expire"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a step decided: fire a trigger (or stay) and which texts to send."""

    trigger: str | None = None
    say: tuple[str, ...] = ()
    values: Mapping[str, object] = field(default_factory=dict)
    understood: bool = True


class Turn:
    """What a step function sees of one message, and the ways it can answer."""

    __slots__ = (
        "_trials",
        "choice",
        "context",
        "credentials",
        "intent",
        "now",
        "profile_name",
        "state",
        "text",
        "trial_cooldown",
    )

    def __init__(
        self, *, text: str, intent: str | None, state: str, context: dict[str, Any],
        now: datetime, profile_name: str | None = None, credentials: Credentials | None = None,
        trials: Callable[[], TrialRecord | None] = lambda: None,
        trial_cooldown: timedelta = timedelta(days=30), choice: str | None = None,
    ) -> None:
        self.text, self.intent, self.state, self.context = text, intent, state, context
        self.now, self.profile_name, self.credentials = now, profile_name, credentials
        self.trial_cooldown, self._trials = trial_cooldown, trials
        # The id of the offered choice this message picked (a tap, its number or its
        # words), or None; `text` then holds the choice's title.
        self.choice = choice

    def move(self, trigger: str, **values: object) -> Decision:
        """Fire `trigger`; the texts are the ones its transition says."""
        return Decision(trigger=trigger, values=values)

    def stay(self, *say: str, **values: object) -> Decision:
        """Keep the state and send the texts named."""
        return Decision(say=say, values=values)

    def not_understood(self) -> Decision:
        """Re-prompt for this step; after three in a row the engine offers the options."""
        return Decision(understood=False)

    def recent_trial(self) -> TrialRecord | None:
        """The latest trial issued to this phone within TRIAL_COOLDOWN_DAYS, if any."""
        trial = self._trials()
        if trial is None or self.now - trial.issued_at >= self.trial_cooldown:
            return None
        return trial


class Flow:
    """Base class of every flow. Subclasses fill in the class attributes below.

    A transition into a final state carries a `reason`, which ops read in
    `sessions.close_reason`. The engine's own reasons (goodbye, cancelled, timeout,
    error, admin, keyword) need no declaring; any other one is declared in
    `close_reasons`, mapping it to the final state it leads to, e.g.
    `close_reasons = {"booked": "closed"}`.

    A flow with a `credentials_state` builds what the credential provider receives in
    `credential_details` (CredentialRequest.details); by default it sends nothing but
    the phone.
    """

    name: ClassVar[str]
    states: ClassVar[Sequence[str]]
    initial: ClassVar[str]
    final: ClassVar[Sequence[str]] = ("closed", "timeout", "cancelled")
    # The flow's own close reasons -> the final state each leads to.
    close_reasons: ClassVar[Mapping[str, str]] = {}
    texts: ClassVar[Mapping[str, str]] = {}
    # text key -> the choices sent with that text: "title" or ("id", "title") each, e.g.
    # {"ask_day": [("lun", "Lunes"), ("mar", "Martes")]}. WhatsApp shows them as
    # buttons or a list (TWILIO_CONTENT_SIDS), anything else as numbered lines.
    choices: ClassVar[Mapping[str, Sequence[str | tuple[str, str]]]] = {}
    transitions: ClassVar[Sequence[Mapping[str, Any]]] = ()
    # state -> text key sent when a message in that state is not understood.
    reprompts: ClassVar[Mapping[str, str]] = {}
    start_text: ClassVar[str] = "greeting"
    # Extra words per intent, e.g. {"afirmacion": ["de diez"]}.
    vocabulary: ClassVar[Mapping[str, Sequence[str]]] = {}
    # Phrases that, when a bot reply contains them, close the session (reason keyword).
    closing_keywords: ClassVar[Sequence[str]] = ()
    # Entering this state issues credentials through the provider, outside the write lock.
    credentials_state: ClassVar[str | None] = None
    # A state's own inactivity timeout and the trigger it fires (default: the session's).
    timeouts: ClassVar[Mapping[str, Timeout]] = {}
    # States renamed since sessions were started: old name -> new name. An open session
    # in a state that no longer exists moves there; without an entry it closes
    # (reason flow_changed).
    renamed: ClassVar[Mapping[str, str]] = {}

    def start(self, turn: Turn) -> Decision:
        """The answer to the first message of a conversation."""
        return turn.stay(self.start_text)

    def credential_details(self, context: dict[str, Any]) -> Mapping[str, str]:
        """What the credential provider receives besides the phone, from the context."""
        return {}

    def expects(self, state: str, context: Mapping[str, Any]) -> str | None:
        """What the bot just asked for in `state`: "name", "email", "free" (free text),
        "yesno", or None for anything. A closing word inside such an answer ("Ana Chau",
        "chau.maria@gmail.com") does not close; a plain "chau" or "cancelar" still does."""
        return None


StepFn = Callable[[Flow, Turn], Decision]


class _Model:
    """The short-lived object a shared Machine moves for one message."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


@dataclass(frozen=True)
class Route:
    """One row of the transition table, as the engine needs it."""

    trigger: str
    source: str
    dest: str
    say: tuple[str, ...]
    reason: str | None


class CompiledFlow:
    """A checked flow: its shared Machine, steps, texts and routes."""

    def __init__(
        self, cls: type[Flow], file: str, routes: list[Route], steps: dict[str, StepFn]
    ) -> None:
        self.cls, self.file, self.name = cls, file, cls.name
        self.instance = cls()
        self.initial, self.final = cls.initial, frozenset(cls.final)
        self.states = tuple(cls.states)
        self.texts: dict[str, str] = {**BASE_TEXTS, **cls.texts}
        self.choices: dict[str, tuple[Choice, ...]] = {
            key: tuple(_choice(item) for item in items) for key, items in cls.choices.items()
        }
        self.steps = steps
        self.intents = Intents(extra=cls.vocabulary or None)
        self.closing_keywords = tuple(k.casefold() for k in cls.closing_keywords)
        self.credentials_state = cls.credentials_state
        # Every reason a session of this flow can close with -> its final state.
        self.close_reasons: dict[str, str] = {**cls.close_reasons, **ENGINE_CLOSE_REASONS}
        self.timeouts: dict[str, Timeout] = dict(cls.timeouts)
        self.renamed: dict[str, str] = dict(cls.renamed)
        self.version = flow_version(cls)
        if cls.credentials_state is not None:
            self.close_reasons.setdefault(*UNDELIVERED_REASON)
        self._routes = {(r.trigger, r.source): r for r in routes}
        self.routes = routes
        self.machine = Machine(
            model=None, states=list(self.states), initial=self.initial,
            transitions=_machine_table(routes), auto_transitions=False,
        )

    def fire(self, state: str, trigger: str) -> Route:
        """Move a state through the shared Machine; raises MachineError if not allowed."""
        event = self.machine.events.get(trigger)
        if event is None:
            raise MachineError(f"flow {self.name!r} has no trigger {trigger!r}")
        model = _Model(state)
        event.trigger(model)
        return self._routes[(trigger, state)]

    def run_step(self, turn: Turn) -> Decision:
        return self.steps[turn.state](self.instance, turn)

    def render(self, key: str, values: Mapping[str, object]) -> str:
        try:
            return self.texts[key].format_map(values)
        except KeyError as exc:
            raise FlowDefinitionError(
                self.file, f"text {key!r}", f"placeholder {{{exc.args[0]}}} has no value",
                "pass it to move()/stay() as a keyword, or store it in turn.context",
            ) from None

    def open_states(self) -> list[str]:
        return [s for s in self.states if s not in self.final]

    def timeout_after(self, state: str, default: timedelta) -> timedelta:
        timeout = self.timeouts.get(state)
        return default if timeout is None else timeout.after

    def timeout_trigger(self, state: str) -> str:
        timeout = self.timeouts.get(state)
        return "expire" if timeout is None else timeout.trigger


def flow_version(cls: type[Flow]) -> str:
    """A short hash of the flow's definition: its class source, or its data without one."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        source = repr((cls.name, cls.states, cls.initial, cls.final, cls.transitions,
                       sorted(cls.texts.items()), sorted(cls.timeouts.items())))
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def placeholders(text: str) -> list[str]:
    """The names a text's `{placeholders}` need, in order ("{a.b}" needs "a")."""
    names = []
    for _, field_name, _, _ in string.Formatter().parse(text):
        if field_name:
            names.append(field_name.split(".")[0].split("[")[0])
    return names


def _choice(item: str | tuple[str, str]) -> Choice:
    return Choice(item, item) if isinstance(item, str) else Choice(item[0], item[1])


def _machine_table(routes: list[Route]) -> list[dict[str, str]]:
    return [{"trigger": r.trigger, "source": r.source, "dest": r.dest} for r in routes]
