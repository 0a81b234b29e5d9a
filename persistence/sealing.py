"""Sealing what must never reach the disk in clear: a credentials message's body.

Fernet (AES-128-CBC with an HMAC-SHA256, from `cryptography`) with the key of
CREDENTIALS_KEY. Without one, a key made at start-up that lives only in the process's
memory: a credentials message still unsent at a crash can then not be opened after the
restart; it is given up like an undelivered one (the user may ask again).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["Sealer", "new_key"]


def new_key() -> str:
    """A fresh key for CREDENTIALS_KEY."""
    return Fernet.generate_key().decode("ascii")


class Sealer:
    def __init__(self, key: str | None = None) -> None:
        # A process-only key when none is configured (see the module docstring).
        self.ephemeral = key is None
        self._fernet = Fernet(key if key is not None else new_key())

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str | None:
        """The clear text, or None when this key did not seal it (or it was altered)."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            return None

    def body(self, body: str, sealed: str | None) -> str:
        """What the recipient gets: the sealed clear text when it opens, else `body`."""
        if sealed is None:
            return body
        return self.open(sealed) or body
