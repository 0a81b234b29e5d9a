"""One error tree for tertulia: every message names the key and the value involved."""

from __future__ import annotations

__all__ = [
    "ClaimLost",
    "ConfigError",
    "CredentialError",
    "FlowDefinitionError",
    "FlowNotFound",
    "FlowTestError",
    "LeaseLost",
    "SessionBusy",
    "SessionNotFound",
    "StoreError",
    "TertuliaError",
    "WebhookError",
]


class TertuliaError(Exception):
    """Base of every error tertulia raises on purpose."""


class ConfigError(TertuliaError):
    """A setting has a value tertulia cannot use; start-up stops on one line."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key} has value {value!r}. Expected {expected}.")


class FlowDefinitionError(TertuliaError):
    """A flow file is wrong; the message names the file, the place and the fix."""

    def __init__(self, file: str, where: str, problem: str, fix: str) -> None:
        self.file, self.where, self.problem, self.fix = file, where, problem, fix
        super().__init__(f"{file}: {where}: {problem}. Fix: {fix}")


class FlowTestError(TertuliaError):
    """A conversation test file cannot be read; the message names the file and line."""

    def __init__(self, file: str, line: int, problem: str, fix: str) -> None:
        self.file, self.line, self.problem, self.fix = file, line, problem, fix
        super().__init__(f"{file}:{line}: {problem}. Fix: {fix}")


class FlowNotFound(TertuliaError):
    """A flow name that no file in FLOWS_DIR defines."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"flow {name!r} is not defined. Known flows: {listed}.")


class SessionNotFound(TertuliaError):
    """No session matches the id or phone given."""

    def __init__(self, key: str, value: object) -> None:
        super().__init__(f"no session with {key} {value!r}.")


class StoreError(TertuliaError):
    """The database refused or lost a write the engine relies on.

    `transient` marks what a retry of the whole transaction may cure: a deadlock or a
    serialisation failure between workers, or a lock wait that ran out.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class ClaimLost(TertuliaError):
    """A worker's claim on an outbox row lapsed and another worker took the row over."""

    def __init__(self, row_id: int) -> None:
        self.row_id = row_id
        super().__init__(f"outbox row {row_id} is no longer claimed by this worker")


class LeaseLost(TertuliaError):
    """A lease holder's effect found the lease gone or taken over: it must not act."""

    def __init__(self, name: str, token: int) -> None:
        self.name = name
        self.token = token
        super().__init__(f"lease {name!r} with token {token} is no longer held")


class SessionBusy(TertuliaError):
    """Another worker's transaction holds this conversation; try again shortly."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id} is busy in another transaction")


class CredentialError(TertuliaError):
    """The credential provider could not issue credentials."""


class WebhookError(TertuliaError):
    """A webhook request we cannot read; the web layer answers 400."""

    def __init__(self, field: str, problem: str, value: str) -> None:
        self.field = field
        shown = f" (value {value!r})" if value else ""
        super().__init__(f"webhook field {field!r}: {problem}{shown}")
