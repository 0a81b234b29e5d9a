"""The simulator's event stream against the real server: what it sends, what it records,
how a browser resumes, and that a stopping server ends it at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.harness import Server, wait_until

pytestmark = pytest.mark.e2e

ServerFactory = Callable[..., Server]

TOKEN = "stream-admin-token-9a3f11"
PHONE = "+5491155500001"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def say(server: Server, text: str) -> None:
    response = server.client.post("/console/api/sim/messages", headers=AUTH,
                                  json={"phone": PHONE, "text": text})
    assert response.status_code == 200, response.text


def feeds(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, payload) of each `feed` event, as EventSource would hand them over."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields.get("event") == "feed":
            yield fields["id"], json.loads(fields["data"])
        fields = {}


def open_stream(server: Server, last_event_id: str | None = None) -> Any:
    headers = {**AUTH, **({"last-event-id": last_event_id} if last_event_id else {})}
    return server.client.stream("GET", "/console/api/sim/stream", params={"phone": PHONE},
                                headers=headers, timeout=httpx.Timeout(20.0))


def test_the_stream_sends_the_conversation_and_records_the_replies_delivered(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"ADMIN_TOKEN": TOKEN})
    say(server, "hola")
    with open_stream(server) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        _, first = next(feeds(response))
    said = [(m["dir"], m["body"][:6]) for m in first["messages"]]
    assert said == [("in", "hola"), ("out", "¡Hola!")]
    assert first["session"]["state"] == "greeting" and first["session"]["open"] is True
    assert [e["trigger"] for e in first["events"]] == ["start"]
    rows = server.rows("SELECT status, sent_at FROM messages WHERE direction = 'out'")
    assert rows[0]["status"] == "delivered" and rows[0]["sent_at"] is not None


def test_a_reconnecting_browser_gets_only_what_came_after_its_last_event(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"ADMIN_TOKEN": TOKEN})
    say(server, "hola")
    with open_stream(server) as response:
        last_id, _ = next(feeds(response))
    say(server, "sí")
    with open_stream(server, last_id) as response:
        _, resumed = next(feeds(response))
    bodies = [m["body"] for m in resumed["messages"]]
    assert bodies[:1] == ["sí"] and "hola" not in bodies
    assert [e["trigger"] for e in resumed["events"]] == ["accept"]


def test_a_close_by_another_process_reaches_an_open_stream(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"ADMIN_TOKEN": TOKEN})
    say(server, "hola")
    with open_stream(server) as response:
        stream = feeds(response)
        next(stream)
        session_id = server.rows("SELECT id FROM sessions")[0]["id"]
        closed = subprocess.run(
            [sys.executable, "-m", "engine", "sessions", "close", str(session_id)],
            cwd=server.workdir, env=server.env, capture_output=True, text=True, timeout=60)
        assert closed.returncode == 0, closed.stderr
        _, update = next(stream)
    assert update["session"]["reason"] == "admin"
    assert [m["body"][:9] for m in update["messages"]] == ["Cerramos "]


def test_stopping_the_server_ends_open_streams_without_the_graceful_timeout(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"ADMIN_TOKEN": TOKEN})
    say(server, "hola")
    ended = threading.Event()

    def listen() -> None:
        try:
            with open_stream(server) as response:
                for _ in feeds(response):
                    pass
        except httpx.TransportError:
            return  # cut off by the server, not ended by it
        ended.set()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    wait_until(lambda: server.rows("SELECT id FROM messages WHERE status = 'delivered'"),
               what="the stream to take the greeting")
    assert server.stop() == 0
    thread.join(timeout=30)
    assert ended.is_set()
    # uvicorn logs this when it has to cancel a response that outlived its grace period.
    assert "timeout graceful shutdown exceeded" not in server.log_text()


def test_the_simulated_phone_shows_choices_numbered_and_takes_their_number(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"ADMIN_TOKEN": TOKEN})
    for text in ("hola", "2"):
        response = server.client.post("/console/api/sim/messages", headers=AUTH,
                                      json={"phone": PHONE, "text": text, "flow": "booking"})
        assert response.status_code == 200, response.text
    wait_until(lambda: len(server.rows("SELECT id FROM messages WHERE direction = 'out'")) == 2,
               what="both replies")

    with open_stream(server) as response:
        _, first = next(feeds(response))

    bodies = [m["body"] for m in first["messages"] if m["dir"] == "out"]
    assert bodies[0].endswith("¿Qué servicio querés?\n\n1. Corte\n2. Barba\n3. Color")
    assert bodies[1] == ("Buenísimo: Barba. ¿Qué día te queda bien?\n\n"
                         "1. Lunes 10:00\n2. Miércoles 15:00\n3. Viernes 18:00")
    assert first["session"]["state"] == "day"
