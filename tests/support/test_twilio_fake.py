"""The Twilio fake, exercised through the REAL twilio-python client."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.support.paths import REPO as REPO_ROOT
from tests.support.twilio_fake import FakeTwilio, Recorded

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "secret-token"
TO = "whatsapp:+34600000001"
FROM = "whatsapp:+14155238886"


def make_client(fake: FakeTwilio, username: str = SID, account_sid: str | None = None) -> Client:
    client = Client(username, TOKEN, account_sid=account_sid)
    client.api.base_url = fake.base_url
    assert client.http_client.session is not None
    client.http_client.session.trust_env = False  # never route loopback via a proxy
    return client


def close_client(client: Client) -> None:
    session = client.http_client.session
    if session is not None:
        session.close()


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TOKEN) as f:
        yield f


@pytest.fixture
def client(fake: FakeTwilio) -> Iterator[Client]:
    c = make_client(fake)
    yield c
    close_client(c)


def send(client: Client, body: str, to: str = TO) -> str:
    msg = client.messages.create(to=to, from_=FROM, body=body)
    assert msg.sid is not None
    return str(msg.sid)


def test_create_returns_sid_and_twilio_shaped_message(fake: FakeTwilio, client: Client) -> None:
    msg = client.messages.create(
        to=TO, from_=FROM, body="hola", status_callback="http://cb.example/status"
    )
    assert msg.sid is not None and re.fullmatch(r"SM[0-9a-f]{32}", msg.sid)
    assert msg.account_sid == SID
    assert (msg.to, msg.from_, msg.body) == (TO, FROM, "hola")
    assert msg.status == "queued"
    assert msg.direction == "outbound-api"
    assert msg.api_version == "2010-04-01"
    assert msg.num_segments == "1"
    assert msg.error_code is None and msg.error_message is None and msg.price is None
    assert msg.date_created is not None and msg.date_created.tzinfo is not None
    assert msg.uri == f"/2010-04-01/Accounts/{SID}/Messages/{msg.sid}.json"

    (rec,) = fake.delivered
    assert isinstance(rec, Recorded)
    assert rec.sid == msg.sid and rec.status_code == 201 and rec.account_sid == SID
    assert (rec.to, rec.from_, rec.body) == (TO, FROM, "hola")
    assert rec.status_callback == "http://cb.example/status"
    assert rec.form["StatusCallback"] == "http://cb.example/status"
    assert fake.requests == fake.delivered


def test_script_500_then_normal(fake: FakeTwilio, client: Client) -> None:
    fake.script(500, 429)
    with pytest.raises(TwilioRestException) as e500:
        send(client, "a")
    assert (e500.value.status, e500.value.code) == (500, 20500)
    with pytest.raises(TwilioRestException) as e429:
        send(client, "b")
    assert (e429.value.status, e429.value.code) == (429, 20429)
    send(client, "c")
    assert [r.status_code for r in fake.requests] == [500, 429, 201]
    assert [r.sid is None for r in fake.requests] == [True, True, False]
    assert fake.delivered_to(TO) == ["c"]


@pytest.mark.parametrize("code", [21211, 21610])
def test_script_error_code(fake: FakeTwilio, client: Client, code: int) -> None:
    fake.script_error(400, code)
    with pytest.raises(TwilioRestException) as exc:
        send(client, "x")
    assert (exc.value.status, exc.value.code) == (400, code)
    send(client, "y")


def test_error_json_shape(fake: FakeTwilio) -> None:
    fake.script(429)
    resp = requests.post(
        f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json",
        data={"To": TO, "From": FROM, "Body": "x"},
        auth=(SID, TOKEN),
        timeout=5,
    )
    assert resp.status_code == 429
    assert resp.json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }


def test_always_and_reset(fake: FakeTwilio, client: Client) -> None:
    fake.always(503)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as exc:
            send(client, "x")
        assert exc.value.status == 503
    fake.always(None)
    send(client, "ok")
    assert fake.delivered_to(TO) == ["ok"]


def test_auth_username_must_match_account_sid(fake: FakeTwilio) -> None:
    other = "AC" + "f" * 32
    c = make_client(fake, username=other, account_sid=SID)
    try:
        with pytest.raises(TwilioRestException) as exc:
            send(c, "x")
    finally:
        close_client(c)
    assert (exc.value.status, exc.value.code) == (401, 20003)
    resp = requests.post(
        f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json",
        data={"To": TO, "From": FROM, "Body": "x"},
        timeout=5,
    )
    assert resp.status_code == 401 and resp.json()["code"] == 20003
    assert [r.status_code for r in fake.requests] == [401, 401]
    assert fake.delivered == []


def test_validation_like_twilio(fake: FakeTwilio, client: Client) -> None:
    with pytest.raises(TwilioRestException) as exc:
        client.messages.create(to=TO, from_=FROM)
    assert (exc.value.status, exc.value.code) == (400, 21602)


def test_down_refuses_and_up_recovers_on_same_port(fake: FakeTwilio, client: Client) -> None:
    port = fake.port
    send(client, "before")  # leaves a pooled keep-alive connection behind
    fake.down()
    assert not fake.is_up
    with pytest.raises(requests.exceptions.ConnectionError):
        send(client, "during")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    fake.up()
    assert fake.is_up and fake.port == port
    send(client, "after")
    assert fake.delivered_to(TO) == ["before", "after"]


def test_down_drops_in_flight_request(fake: FakeTwilio, client: Client) -> None:
    fake.latency(2.0)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            send(client, "in flight")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    deadline = time.monotonic() + 2
    while fake.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.in_flight == 1
    fake.down()
    t.join(timeout=2)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], requests.exceptions.ConnectionError)
    assert [r.status_code for r in fake.requests] == [0]
    fake.up()


def test_latency_is_honoured(fake: FakeTwilio, client: Client) -> None:
    fake.latency(0.05)
    t0 = time.monotonic()
    send(client, "slow")
    assert time.monotonic() - t0 >= 0.05


def test_latency_is_concurrent(fake: FakeTwilio) -> None:
    fake.latency(0.3)
    clients = [make_client(fake) for _ in range(4)]
    peak = 0
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, c, "p") for c in clients]
            while not all(f.done() for f in futures):
                peak = max(peak, fake.in_flight)
                time.sleep(0.01)
    finally:
        for c in clients:
            close_client(c)
    assert peak >= 2  # requests wait out their latency side by side, not in a queue
    assert len(fake.wait_for(4, timeout=1)) == 4


def test_delivered_to_keeps_order_per_recipient(fake: FakeTwilio, client: Client) -> None:
    other = "whatsapp:+34600000002"
    for i in range(5):
        send(client, f"a{i}")
        send(client, f"b{i}", to=other)
    assert fake.delivered_to(TO) == [f"a{i}" for i in range(5)]
    assert fake.delivered_to(other) == [f"b{i}" for i in range(5)]
    assert fake.delivered_to("whatsapp:+1") == []


def test_wait_for(fake: FakeTwilio, client: Client) -> None:
    threading.Timer(0.05, send, args=(client, "late")).start()
    got = fake.wait_for(1, timeout=5)
    assert [r.body for r in got] == ["late"]
    with pytest.raises(AssertionError, match="expected >= 2"):
        fake.wait_for(2, timeout=0.05)


def test_fail_rates_are_seeded(fake: FakeTwilio, client: Client) -> None:
    def run() -> list[int]:
        fake.clear()
        fake.fail_rates(error_500=0.3, error_429=0.3, seed=42)
        for i in range(20):
            with contextlib.suppress(TwilioRestException):
                send(client, str(i))
        return [r.status_code for r in fake.requests]

    first = run()
    assert first == run()
    assert {500, 429, 201} <= set(first)
    fake.reset()
    send(client, "clean")


def test_max_rate(fake: FakeTwilio, client: Client) -> None:
    assert fake.max_rate() == 0.0
    for i in range(3):
        send(client, str(i))
    assert fake.max_rate(window=60.0) == pytest.approx(3 / 60.0)
    assert fake.max_rate(window=1e-9) == pytest.approx(1 / 1e-9)


def test_unknown_path_is_404(fake: FakeTwilio) -> None:
    resp = requests.get(f"{fake.base_url}/nope", timeout=5)
    assert resp.status_code == 404 and resp.json()["code"] == 20404


def test_cli_serves_and_records(tmp_path: Path) -> None:
    record = tmp_path / "req.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "tests.support.twilio_fake",
        "--port",
        "0",
        "--latency",
        "0.01",
        "--record",
        str(record),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            m = re.fullmatch(r"listening (http://127\.0\.0\.1:\d+)", line)
            assert m, line
            resp = requests.post(
                f"{m.group(1)}/2010-04-01/Accounts/{SID}/Messages.json",
                data={"To": TO, "From": FROM, "Body": "bench"},
                auth=(SID, TOKEN),
                timeout=5,
            )
            assert resp.status_code == 201
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    (entry,) = [json.loads(x) for x in record.read_text().splitlines()]
    assert entry["body"] == "bench" and entry["status_code"] == 201
    assert entry["sid"] == resp.json()["sid"]
