"""Logging set-up: text or JSON lines, and phone numbers masked in every record."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
from typing import Any

__all__ = ["PhoneMaskFilter", "configure", "mask_phone"]

# A phone number of any E.164 length (7 to 15 digits), with or without the plus, as it
# appears in our logs and twilio's (URL-encoded there: %2B549...). Digits inside a word
# (a MessageSid's hex) are not a phone, nor is a mask already made ('+5491123...'): a
# line masked where it was written passes the log filter unchanged.
_PHONE = re.compile(r"(?:(?<=%2B)|(?<![0-9A-Za-z]))\+?[0-9]{7,15}(?![0-9A-Za-z]|\.\.\.)")
# Always hidden: at least this many digits, so no number is guessable from its mask.
_HIDDEN_DIGITS = 5
_SHOWN_DIGITS = 7


def mask_phone(text: str) -> str:
    """'+5491123456789' -> '+5491123...'; '+1234567' -> '+12...'.

    At most the first 7 digits are shown, and never more than the number's length less
    5, so short (7-9 digit) numbers are masked as well as long ones.
    """
    return _PHONE.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    number = match.group(0)
    plus = "+" if number.startswith("+") else ""
    body = number.removeprefix("+")
    shown = max(1, min(_SHOWN_DIGITS, len(body) - _HIDDEN_DIGITS))
    return f"{plus}{body[:shown]}..."


def _masked_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: mask_phone(value) if isinstance(value, str) else value
            for key, value in fields.items()}


class PhoneMaskFilter(logging.Filter):
    """Rewrites the message of every record so no full number reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phone(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_phone(logging.Formatter().formatException(record.exc_info))
        return True


class _MaskingQueueHandler(logging.handlers.QueueHandler):
    """Masks phones and formats in the caller's thread; the listener only writes.

    The queue carries the finished line, not a record: a second LogRecord per line was
    half the cost of logging, and the writer thread logs a line per message.
    """

    def __init__(self, lines: queue.SimpleQueue[Any], formatter_of: logging.Handler) -> None:
        super().__init__(lines)
        self.addFilter(PhoneMaskFilter())
        self._format_with = formatter_of

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.enqueue(self._format_with.format(record))  # type: ignore[arg-type]
        except Exception:
            self.handleError(record)


class _Passthrough(logging.Handler):
    """Writes the already formatted lines to the stream."""

    def __init__(self, stream: logging.StreamHandler[Any]) -> None:
        super().__init__()
        self._stream = stream.stream

    def handle(self, record: Any) -> bool:
        # QueueListener hands over what the queue holds, a str: nothing to filter or format.
        self._stream.write(f"{record}\n")
        self._stream.flush()
        return True


def _stop_listener() -> None:
    if _listener is not None:
        _listener.stop()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_masked_fields(getattr(record, "fields", {}) or {}))
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


_listener: logging.handlers.QueueListener | None = None


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger through one masked handler on stderr.

    Records are formatted where they happen but written by a background thread, so a
    slow stderr never holds up the thread that commits messages.
    """
    global _listener
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(
        _JsonFormatter() if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = _MaskingQueueHandler(lines, stream)
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(lines, _Passthrough(stream))
    _listener.start()
    atexit.register(_stop_listener)
    # No format here shows the caller's file, thread or process: skip collecting them
    # (the logging HOWTO's "Optimization"); finding the caller walks the stack per line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # twilio logs every request at INFO, with full numbers in its texts.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    for noisy in ("apscheduler", "transitions", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
