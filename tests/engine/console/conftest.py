"""Fixtures for the console: the real app in-process (Starlette's TestClient drives the
real worker, writer and scheduler on this test's SQLite file)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from engine.server.app import create_app
from engine.server.worker import Worker
from tests.support.wiring import make_settings

TOKEN = "console-admin-token-7c1e9b"  # distinctive, so a leak into a log is findable
ORIGIN = "http://testserver"

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def console_client(tmp_path: Path) -> Iterator[ClientFactory]:
    """`factory(client=("127.0.0.1", 5000), **env)`: a started app; env overrides settings."""
    opened: list[TestClient] = []

    def factory(client: tuple[str, int] = ("testclient", 50000), base_url: str = ORIGIN,
                **env: str) -> TestClient:
        worker = Worker(make_settings(tmp_path, **env))
        test_client = TestClient(create_app(worker), base_url=base_url, client=client,
                                 follow_redirects=False)
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield factory
    for test_client in opened:
        test_client.__exit__(None, None, None)


def csrf_of(page: str) -> str:
    """The CSRF token a console page carries in its meta tag."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def log_in(client: TestClient, token: str = TOKEN) -> str:
    """Log in through the form, as a browser does; returns the session's CSRF token."""
    response = client.post("/console/login", data={"token": token, "next": ""},
                           headers={"origin": ORIGIN})
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/console/simulator").text)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def say(client: TestClient, phone: str, *texts: str, **extra: Any) -> None:
    """The simulated phone writes each text (bearer API); each is committed on return."""
    for text in texts:
        response = client.post("/console/api/sim/messages", headers=bearer(),
                               json={"phone": phone, "text": text, **extra})
        assert response.status_code == 200, response.text
