"""Logging set-up: text or JSON lines, and phone numbers masked in every record."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

__all__ = ["PhoneMaskFilter", "configure", "mask_phone"]

# E.164 numbers, with or without the plus, as they appear in our logs and twilio's.
_PHONE = re.compile(r"\+?\d{10,15}")


def mask_phone(text: str) -> str:
    """'+5491123456789' -> '+5491123...': the first 8 characters, then '...'."""
    return _PHONE.sub(lambda m: m.group(0)[:8] + "...", text)


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


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}) or {})
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger through one masked handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(PhoneMaskFilter())
    handler.setFormatter(
        _JsonFormatter() if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # twilio logs every request at INFO, with full numbers in its texts.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    for noisy in ("apscheduler", "transitions", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
