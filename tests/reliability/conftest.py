"""Fixtures for the reliability tests, built from the e2e harness (tests/e2e/harness.py).

They mirror tests/e2e/conftest.py (whose fixtures are not visible outside that folder):

- `fake`: a started `RecipientFakeTwilio` that checks the Basic auth the server sends.
- `server_factory(allow_traceback=False, **kwargs)`: starts a `harness.Server` in this
  test's tmp_path, wired to `fake`, and waits until it is healthy. At teardown every
  server is stopped (killed if SIGTERM does not work) and its log is checked: a
  "Traceback" fails the test unless the test injects a fault on purpose and says so
  with `allow_traceback=True` (it must then assert that the server recovered); the auth
  token in a log always fails it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tests.e2e.harness import AUTH_TOKEN, RecipientFakeTwilio, Server

# Hypothesis keeps caches (parsed constants, Unicode tables) in ./.hypothesis even
# without an example database; keep them out of the working tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tertulia-reliability-hypothesis")


@pytest.fixture
def fake() -> Iterator[RecipientFakeTwilio]:
    twilio = RecipientFakeTwilio(auth_token=AUTH_TOKEN).start()
    try:
        yield twilio
    finally:
        twilio.stop()


ServerFactory = Callable[..., Server]


def check_logs(servers: list[tuple[Server, bool]]) -> list[str]:
    """Stop every server, then what is wrong with their logs (empty if nothing)."""
    problems: list[str] = []
    for server, _ in servers:
        try:
            server.close()
        except AssertionError as exc:
            problems.append(str(exc))
    for server, allow_traceback in servers:
        log = server.log_text()
        if "Traceback" in log and not allow_traceback:
            problems.append(f"{server.name} logged a traceback:\n{log[-6000:]}")
        if AUTH_TOKEN in log:
            problems.append(f"{server.name} logged TWILIO_AUTH_TOKEN")
    return problems


@pytest.fixture
def server_factory(tmp_path: Path, fake: RecipientFakeTwilio) -> Iterator[ServerFactory]:
    made: list[tuple[Server, bool]] = []

    def factory(*, allow_traceback: bool = False, **kwargs: Any) -> Server:
        kwargs.setdefault("twilio_api", fake.base_url)
        kwargs.setdefault("name", "server" if not made else f"server{len(made) + 1}")
        server = Server(tmp_path, **kwargs)
        made.append((server, allow_traceback))
        return server.start()

    yield factory
    problems = check_logs(made)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
