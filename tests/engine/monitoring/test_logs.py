"""Phone masking in the log (issue 11, item 6): every E.164 length, with or without the
plus, URL-encoded as twilio-python logs it, in text and in JSON lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from engine.monitoring import logs
from engine.monitoring.logs import mask_phone


@pytest.mark.parametrize(("raw", "masked"), [
    ("+1234567", "+12..."),  # 7 digits, the shortest E.164 number we take
    ("+12345678", "+123..."),
    ("+123456789", "+1234..."),
    ("+14155238886", "+141552..."),
    ("+5491123456789", "+5491123..."),
    ("+123456789012345", "+1234567..."),  # 15 digits, the longest
    ("5491123456789", "5491123..."),
    ("1234567", "12..."),
])
def test_every_length_is_masked_and_at_least_five_digits_hidden(raw: str, masked: str) -> None:
    assert mask_phone(f"to {raw} now") == f"to {masked} now"
    shown = masked.removesuffix("...").lstrip("+")
    assert len(raw.lstrip("+")) - len(shown) >= 5


def test_numbers_in_urls_and_sids_and_masks_already_made() -> None:
    encoded = "To=whatsapp%3A%2B447700123&Body=hola"
    assert "447700123" not in mask_phone(encoded)
    sid = "SM0123456789abcdef0123456789abcdef"
    assert mask_phone(f"sid {sid}") == f"sid {sid}"  # digits inside a word: not a phone
    assert mask_phone("phone=+5491123...") == "phone=+5491123..."  # masking twice is a no-op
    assert mask_phone("port 8000, 12 rows") == "port 8000, 12 rows"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_and_json_fields_carry_no_full_number(fmt: str) -> None:
    # The filter and formatter configure() puts on the root logger, on a private one.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.PhoneMaskFilter())
    handler.setFormatter(logs._JsonFormatter() if fmt == "json" else logging.Formatter())
    log = logging.getLogger(f"tertulia.test.masking.{fmt}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.info("from %s", "+4477001")
    log.info("event", extra={"fields": {"phone": "+44770012", "note": "to 447700123"}})
    try:
        raise ValueError("bad number +447700123")
    except ValueError:
        log.exception("failed for %s", "+4477001")
    log.removeHandler(handler)
    out = stream.getvalue()
    for digits in ("4477001", "44770012", "447700123"):
        assert digits not in out, out
    assert "+44..." in out
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert lines[1]["phone"] == "+447..." and lines[1]["note"] == "to 4477..."
        assert "+4477..." in lines[2]["exception"]
