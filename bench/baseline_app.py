"""The floors of tertulia's own web stack, for bench/webhook.py.

Same stack (Starlette + uvicorn, same `uvicorn.run` settings as `tertulia serve`), same
route and the same form, parsed the same way (`urllib.parse.parse_qsl`, as
engine.channels.twilio.parse_form does). Two modes:

- ``bare``: parse the form, answer ``<Response/>`` as text/xml.
- ``sqlite``: the same, plus one ``BEGIN IMMEDIATE``; INSERT; COMMIT into a SQLite file
  with tertulia's PRAGMAs (WAL, synchronous=NORMAL, busy_timeout 10 s, foreign keys),
  off the event loop (run_in_threadpool, like tertulia), one connection per worker
  thread, with writers queued on a process lock like persistence.store.SqlStore does.
  Raw sqlite3, no SQLAlchemy: this is the floor.

- ``batched``: the same insert, but through one writer thread that commits whatever
  queued meanwhile in one transaction, each webhook answered after its commit, the
  waiting requests woken once per batch: tertulia's own design (engine/batching.py)
  with one statement per message instead of a conversation step.

None checks the signature: that is part of what tertulia does on top of the floor.

    python -m bench.baseline_app --mode bare|sqlite|batched --port 8001 [--db /tmp/x.db]
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import threading
import time
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS inbound (id INTEGER PRIMARY KEY, sid TEXT NOT NULL UNIQUE, "
    "phone TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL)"
)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


_INSERT = "INSERT INTO inbound (sid, phone, body, created_at) VALUES (?, ?, ?, ?)"


def _row(form: dict[str, str]) -> tuple[str, str, str, str]:
    return (form.get("MessageSid", ""), form.get("From", ""), form.get("Body", ""),
            time.strftime("%Y-%m-%d %H:%M:%S"))


class _Batcher:
    """Group commit, as engine/batching.py does it, around one INSERT per message."""

    def __init__(self, db: str) -> None:
        self._db = db
        self._queue: queue.SimpleQueue[tuple[dict[str, str], asyncio.Future[None]]] = \
            queue.SimpleQueue()
        threading.Thread(target=self._loop, name="group-commit", daemon=True).start()

    def submit(self, form: dict[str, str]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((form, future))
        return future

    def _loop(self) -> None:
        conn = _connect(self._db)
        while True:
            batch = [self._queue.get()]
            while len(batch) < 128:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error: Exception | None = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                for form, _ in batch:
                    conn.execute("SAVEPOINT message")
                    conn.execute(_INSERT, _row(form))
                    conn.execute("RELEASE SAVEPOINT message")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:  # answered as a 500: never a writer that died
                error = exc
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            futures = [future for _, future in batch]
            futures[0].get_loop().call_soon_threadsafe(_resolve, futures, error)


def _resolve(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def create_app(mode: str, db: str | None) -> Starlette:
    local = threading.local()
    write_lock = threading.Lock()
    if mode in ("sqlite", "batched"):
        assert db, f"--db is required with --mode {mode}"
        setup = _connect(db)
        setup.execute(SCHEMA)
        setup.close()
    # After the set-up: two connections switching to WAL at once can fail as "locked".
    batcher = _Batcher(db or "") if mode == "batched" else None

    def write(form: dict[str, str]) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = _connect(db or "")
        with write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_INSERT, _row(form))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def whatsapp(request: Request) -> Response:
        body = await request.body()
        try:
            text = body.decode("utf-8")
            form = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
        except (UnicodeDecodeError, ValueError):
            return PlainTextResponse("bad form", status_code=400)
        if mode == "sqlite":
            await run_in_threadpool(write, form)
        elif batcher is not None:
            await batcher.submit(form)
        return Response(EMPTY_TWIML, media_type="text/xml")

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "mode": mode})

    return Starlette(routes=[
        Route("/twilio/whatsapp", whatsapp, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_app")
    parser.add_argument("--mode", choices=["bare", "sqlite", "batched"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    app = create_app(args.mode, args.db)
    # The same settings as engine/cli.py `serve`.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                lifespan="on", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
