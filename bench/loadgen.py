"""The load generator: signed Twilio webhooks over keep-alive HTTP/1.1 connections.

It runs in its own process (the benchmarks spawn `python -m bench.loadgen`), so its CPU
does not count against the server's. It reads one JSON spec on stdin and prints one JSON
result on stdout. It speaks raw HTTP/1.1 on asyncio streams: a client such as httpx
costs several times more CPU per request, and on a 2-core host the load generator
competes with the server for the second core.

Spec::

    {"host": "127.0.0.1", "port": 8000, "path": "/twilio/whatsapp",
     "signed_url": "http://127.0.0.1:8000/twilio/whatsapp",   # what Twilio would sign
     "token": "...", "account_sid": "AC...",
     "concurrency": 32,          # connections, each with one request in flight
     "duration": 4.0,            # stop issuing new requests after this many seconds
     "timeout": 30.0,            # per request
     "phones": {"base": 5491100000000, "start": 0, "count": 1024},
     "texts": ["mmm"],
     "order": "round_robin",     # or "random" (seeded), or "rounds": every phone gets
                                 # texts[0], then every phone texts[1], ...
     "n": 50000, "seed": 1, "sid_prefix": "0a1b2c3d"}

Every loop is bounded: by `n` requests and by `duration` seconds (plus `timeout`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
import time
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

SENDER = "whatsapp:+14155238886"


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in 0..100."""
    if not values:
        return float("nan")
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def webhook_params(phone: str, text: str, sid: str, account_sid: str) -> dict[str, str]:
    """The fields Twilio posts for an inbound WhatsApp text (as of 2025)."""
    return {
        "SmsMessageSid": sid, "NumMedia": "0", "ProfileName": "Bench", "MessageType": "text",
        "SmsSid": sid, "WaId": phone[1:], "SmsStatus": "received", "Body": text,
        "To": SENDER, "NumSegments": "1", "ReferralNumMedia": "0", "MessageSid": sid,
        "AccountSid": account_sid, "From": f"whatsapp:{phone}", "ApiVersion": "2010-04-01",
    }


class Plan:
    """Which phone and text the i-th request carries."""

    def __init__(self, spec: dict[str, Any]) -> None:
        phones = spec["phones"]
        self.base, self.start, self.count = int(phones["base"]), int(phones["start"]), \
            int(phones["count"])
        self.texts = list(spec["texts"])
        self.order = spec.get("order", "round_robin")
        self.rng = random.Random(spec.get("seed", 1))
        if self.order == "rounds":
            self.n = min(int(spec["n"]), self.count * len(self.texts))
        else:
            self.n = int(spec["n"])

    def item(self, i: int) -> tuple[str, str]:
        if self.order == "rounds":
            text, phone = self.texts[i // self.count], i % self.count
        elif self.order == "random":
            text, phone = self.texts[i % len(self.texts)], self.rng.randrange(self.count)
        else:
            text, phone = self.texts[i % len(self.texts)], i % self.count
        return f"+{self.base + self.start + phone}", text


def build_request(spec: dict[str, Any], validator: RequestValidator, phone: str, text: str,
                  sid: str) -> bytes:
    params = webhook_params(phone, text, sid, spec["account_sid"])
    signature = validator.compute_signature(spec["signed_url"], params)
    body = urlencode(params).encode()
    head = (
        f"POST {spec['path']} HTTP/1.1\r\n"
        f"Host: {spec['host']}:{spec['port']}\r\n"
        "User-Agent: TwilioProxy/1.1\r\n"
        "Accept: */*\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Twilio-Signature: {signature}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep_alive) of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            close = True
    if chunked:
        for _ in range(100_000):  # bounded
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, not close


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    plan = Plan(spec)
    validator = RequestValidator(spec["token"])
    prefix = spec.get("sid_prefix") or os.urandom(4).hex()
    concurrency, duration = int(spec["concurrency"]), float(spec["duration"])
    timeout = float(spec.get("timeout", 30.0))
    host, port = spec["host"], int(spec["port"])
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    counter = 0
    conns = [await _open(host, port) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + duration
    last_done = started

    async def worker(k: int) -> None:
        nonlocal counter, last_done
        reader, writer = conns[k]
        for _ in range(plan.n):  # bounded by n; the deadline usually ends it first
            if counter >= plan.n or time.perf_counter() >= deadline:
                break
            i = counter
            counter += 1
            phone, text = plan.item(i)
            sid = f"SM{prefix}{i:0{32 - len(prefix)}x}"
            request = build_request(spec, validator, phone, text, sid)
            t0 = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
                status, keep = await asyncio.wait_for(_read_response(reader), timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError,
                    asyncio.LimitOverrunError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                writer.close()
                reader, writer = await _open(host, port)
                continue
            t1 = time.perf_counter()
            latencies.append((t1 - t0) * 1000.0)
            statuses[status] = statuses.get(status, 0) + 1
            last_done = t1
            if not keep:
                writer.close()
                reader, writer = await _open(host, port)
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = max(last_done - started, 1e-9)
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency, "requests": len(latencies), "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": len(errors), "first_errors": errors[:3], "elapsed_s": elapsed,
        "rps": ok / elapsed,
        "lat_ms": {
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": max(latencies) if latencies else None,
            "mean": sum(latencies) / len(latencies) if latencies else None,
        },
    }


def main() -> int:
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(run(spec))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
