"""Credential providers: the local generator, and loading one from CREDENTIAL_PROVIDER."""

from __future__ import annotations

import importlib
import re
import secrets
import string
import unicodedata
from datetime import timedelta
from typing import Any

from engine.core.errors import ConfigError
from engine.core.ports import CredentialProvider, CredentialRequest, Credentials

__all__ = ["LocalCredentialProvider", "load_provider"]

_ALPHABET = string.ascii_letters + string.digits


class LocalCredentialProvider:
    """Makes a username from `details["name"]` plus digits, and a random password.

    It keeps no state: the engine records the trial in `trials`, keyed by the session,
    so a retry with the same key issues a fresh password but never a second trial.
    """

    def __init__(self, *, trial_duration: timedelta = timedelta(hours=24),
                 login_url: str = "https://app.tertulia.example/login") -> None:
        self.trial_duration, self.login_url = trial_duration, login_url

    def issue(self, request: CredentialRequest) -> Credentials:
        return Credentials(
            username=_username(request.details.get("name", "")),
            password="".join(secrets.choice(_ALPHABET) for _ in range(12)),
            expires_at=request.now + self.trial_duration,
            login_url=self.login_url,
        )


def _username(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z]", "", ascii_name.lower().split()[0] if ascii_name.split() else "")
    return f"{base[:12] or 'usuario'}{secrets.randbelow(9000) + 1000}"


def load_provider(path: str | None, **kwargs: Any) -> CredentialProvider:
    """The provider named `module:Class`, or the local generator when unset."""
    if path is None:
        return LocalCredentialProvider(**kwargs)
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            "CREDENTIAL_PROVIDER", path, f"an importable module:Class ({exc})"
        ) from None
    try:
        provider: CredentialProvider = factory(**kwargs)
    except TypeError:
        provider = factory()
    if not callable(getattr(provider, "issue", None)):
        raise ConfigError("CREDENTIAL_PROVIDER", path, "a class with an issue(request) method")
    return provider
