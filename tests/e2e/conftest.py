"""Fixtures for the end-to-end tests: the loopback Twilio fake and real servers.

- `fake`: a started `RecipientFakeTwilio` (FakeTwilio plus per-recipient scripts) that
  checks the Basic auth the server sends; stopped at teardown.
- `server_factory(**kwargs)`: starts a `Server` (see harness.Server for the keyword
  arguments) in this test's tmp_path, wired to `fake`, and waits until it is healthy.
  Every server it made is stopped at teardown (killed if SIGTERM does not work), and
  then its log is checked: a "Traceback", or the auth token, anywhere in it fails
  the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import AUTH_TOKEN, RecipientFakeTwilio, Server


@pytest.fixture
def fake() -> Iterator[RecipientFakeTwilio]:
    twilio = RecipientFakeTwilio(auth_token=AUTH_TOKEN).start()
    try:
        yield twilio
    finally:
        twilio.stop()


ServerFactory = Callable[..., Server]


@pytest.fixture
def server_factory(tmp_path: Path, fake: RecipientFakeTwilio) -> Iterator[ServerFactory]:
    made: list[Server] = []

    def factory(**kwargs: Any) -> Server:
        kwargs.setdefault("twilio_api", fake.base_url)
        kwargs.setdefault("name", "server" if not made else f"server{len(made) + 1}")
        server = Server(tmp_path, **kwargs)
        made.append(server)
        return server.start()

    yield factory
    problems: list[str] = []
    for server in made:
        try:
            server.close()
        except AssertionError as exc:
            problems.append(str(exc))
    for server in made:
        log = server.log_text()
        if "Traceback" in log:
            problems.append(f"{server.name} logged a traceback:\n{log[-6000:]}")
        if AUTH_TOKEN in log:
            problems.append(f"{server.name} logged TWILIO_AUTH_TOKEN")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)

