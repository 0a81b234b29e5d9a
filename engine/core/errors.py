"""One error tree for tertulia: every message names the key and the value involved."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CredentialError",
    "FlowDefinitionError",
    "FlowNotFound",
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
    """The database refused or lost a write the engine relies on."""


class CredentialError(TertuliaError):
    """The credential provider could not issue credentials."""


class WebhookError(TertuliaError):
    """A webhook request we cannot read; the web layer answers 400."""

    def __init__(self, field: str, problem: str, value: str) -> None:
        self.field = field
        shown = f" (value {value!r})" if value else ""
        super().__init__(f"webhook field {field!r}: {problem}{shown}")
