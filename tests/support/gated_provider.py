"""A credential provider a test holds mid-issue, for a real server subprocess.

`CREDENTIAL_PROVIDER=tests.support.gated_provider:GatedProvider` with
TERTULIA_TEST_GATE_DIR set to a folder (and the repository on PYTHONPATH). Each ask
leaves `asked-<key>-<n>` there, then waits until the file `open` exists, then issues as
the local generator does and writes what it issued to `issued-<key>.json`, so the test
knows the password the user must receive (and must not find on disk).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from engine.core.errors import CredentialError
from engine.core.ports import CredentialRequest, Credentials
from engine.credentials.local import LocalCredentialProvider

__all__ = ["GATE_ENV", "GatedProvider", "issued"]

GATE_ENV = "TERTULIA_TEST_GATE_DIR"
_PATIENCE = 60.0


class GatedProvider:
    def __init__(self, **kwargs: Any) -> None:
        self.gate = Path(os.environ[GATE_ENV])
        self.local = LocalCredentialProvider(**kwargs)

    def issue(self, request: CredentialRequest) -> Credentials:
        (self.gate / f"asked-{request.key}-{time.monotonic_ns()}").touch()
        deadline = time.monotonic() + _PATIENCE
        while not (self.gate / "open").exists():
            if time.monotonic() > deadline:
                raise CredentialError(f"the test never opened {self.gate / 'open'}")
            time.sleep(0.02)
        creds = self.local.issue(request)
        record = {"username": creds.username, "password": creds.password,
                  "expires_at": creds.expires_at.isoformat(), "login_url": creds.login_url}
        (self.gate / f"issued-{request.key}.json").write_text(json.dumps(record))
        return creds


def issued(gate: Path, key: int) -> dict[str, str]:
    """What the provider issued for session `key` (its last issue)."""
    data: dict[str, str] = json.loads((gate / f"issued-{key}.json").read_text())
    return data
