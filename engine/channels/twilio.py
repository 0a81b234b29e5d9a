"""The Twilio WhatsApp channel: webhook parsing, the signature check, and the REST sender.

Facts from Twilio's docs and the twilio-python source (DESIGN.md):
- the signature is HMAC-SHA1 over the exact URL Twilio called plus the sorted POST
  parameters, so behind a proxy the URL is rebuilt from PUBLIC_BASE_URL or X-Forwarded-*;
- Twilio adds fields without notice, so unknown fields are never rejected;
- twilio's HTTP client does not wrap timeouts or connection errors, and has no default
  timeout at all.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from engine.core.choices import Choice, numbered
from engine.core.errors import WebhookError
from engine.core.ports import Inbound
from engine.core.text import digits, is_e164

__all__ = [
    "Form",
    "SendFailure",
    "SendResult",
    "TrustedProxies",
    "TwilioSender",
    "check_account",
    "content_variables",
    "parse_form",
    "parse_inbound",
    "parse_status",
    "signed_url",
    "valid_signature",
]

CHANNEL = "whatsapp"
# Twilio's formats: a message is SM (or MM, with media) and 32 lowercase hex digits, an
# account AC and 32. A replayed webhook with a made-up MessageSid does not pass.
MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
# More than any real webhook carries (ten media are about fifty fields).
MAX_FIELDS = 256
# A host name or bracketed IPv6 address, and an optional port: what a URL can carry.
_HOST = re.compile(
    r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
)


class Form:
    """POST parameters in arrival order; repeated keys kept, as the signature needs them."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        self._values: dict[str, list[str]] = {}
        for key, value in self.pairs:
            self._values.setdefault(key, []).append(value)

    def get(self, key: str, default: str = "") -> str:
        values = self._values.get(key)
        return values[0] if values else default

    def getlist(self, key: str) -> list[str]:
        return self._values.get(key, [])

    # RequestValidator asks for `getall` first and falls back on AttributeError, which
    # cost a raised exception per field on every signature check.
    getall = getlist

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values


def parse_form(body: bytes) -> Form:
    """Decode an x-www-form-urlencoded body; raises WebhookError on bytes that are not."""
    try:
        text = body.decode("utf-8")
        return Form(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                              errors="strict", max_num_fields=MAX_FIELDS))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookError("body", "it is not form-encoded UTF-8", str(exc)[:80]) from None


def parse_inbound(form: Form) -> Inbound:
    """The message a WhatsApp user sent, from Twilio's inbound webhook parameters."""
    sender, sid = form.get("From"), form.get("MessageSid")
    if not sender:
        raise WebhookError("From", "the field is missing", "")
    _check_sid(sid)
    if not sender.startswith("whatsapp:"):
        # This endpoint is WhatsApp's: an SMS or made-up sender is not one of our users.
        raise WebhookError("From", "it is not a WhatsApp address (whatsapp:+...)", sender[:40])
    phone = sender.removeprefix("whatsapp:")
    if not is_e164(phone):
        raise WebhookError("From", "it is not a WhatsApp number", sender[:40])
    # A tapped button or list item: the words tapped are the text (what intents read),
    # its id the choice. Body carries the words too, and comes first.
    text = form.get("Body") or form.get("ButtonText") or form.get("ListTitle")
    choice = form.get("ButtonPayload") or form.get("ListId") or None
    return Inbound(channel=CHANNEL, phone=phone, text=text, message_id=sid,
                   profile_name=form.get("ProfileName") or None, kind=_kind(form, text),
                   choice=choice)


def _check_sid(sid: str) -> None:
    if not sid:
        raise WebhookError("MessageSid", "the field is missing", "")
    if MESSAGE_SID.fullmatch(sid) is None:
        raise WebhookError("MessageSid", "it is not a Twilio message SID (SM or MM and 32 "
                           "hex digits)", sid[:40])


def check_account(form: Form, account_sid: str | None) -> None:
    """AccountSid in Twilio's format and, when one is configured, that account."""
    given = form.get("AccountSid")
    if ACCOUNT_SID.fullmatch(given) is None:
        raise WebhookError("AccountSid", "it is not a Twilio account SID (AC and 32 hex "
                           "digits)", given[:40])
    if account_sid is not None and not hmac.compare_digest(given, account_sid):
        raise WebhookError("AccountSid", "it is not the account of TWILIO_ACCOUNT_SID",
                           given[:40])


def _kind(form: Form, text: str) -> str:
    if text.strip():
        return "text"
    if form.get("Latitude") or form.get("MessageType") == "location":
        return "location"
    if _int(form.get("NumMedia")) > 0:
        return "media"
    return "other" if form.get("MessageType") not in ("", "text") else "text"


def _int(raw: str) -> int:
    return int(raw) if digits(raw, max_len=9) else 0


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    sid: str
    status: str
    error_code: int | None


def parse_status(form: Form) -> StatusUpdate:
    """A delivery status callback: MessageSid, MessageStatus and maybe ErrorCode."""
    sid, status = form.get("MessageSid"), form.get("MessageStatus")
    _check_sid(sid)
    if not status:
        raise WebhookError("MessageStatus", "the field is missing", "")
    code = form.get("ErrorCode")
    return StatusUpdate(sid, status.lower(), int(code) if digits(code, max_len=9) else None)


class TrustedProxies:
    """FORWARDED_ALLOW_IPS: '*', or addresses and networks, as uvicorn reads it."""

    def __init__(self, allow: str) -> None:
        items = [item.strip() for item in allow.split(",") if item.strip()]
        self.everyone = "*" in items
        self._networks = [ipaddress.ip_network(item, strict=False)
                          for item in items if item != "*"]

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        try:
            address = ipaddress.ip_address(str(host))
        except ValueError:
            return False  # a unix socket or a test client's name: not a proxy we know
        return any(address in network for network in self._networks)


def signed_url(
    scheme: str, path_qs: str, headers: Mapping[str, str], public_base_url: str | None,
    *, forwarded: bool,
) -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL, else the Host (or, from a trusted proxy,
    X-Forwarded-Host and -Port) this request names. `scheme` is the request's, which a
    trusted proxy's X-Forwarded-Proto already set. WebhookError on a malformed header."""
    if public_base_url:
        return public_base_url + path_qs
    host = headers.get("host", "")
    name = "Host"
    if forwarded and headers.get("x-forwarded-host"):
        host = headers["x-forwarded-host"].split(",")[0].strip()
        name = "X-Forwarded-Host"
    host = _checked_host(name, host)
    port = headers.get("x-forwarded-port", "").split(",")[0].strip() if forwarded else ""
    if port:
        if not digits(port, max_len=5) or not 0 < int(port) < 65536:
            raise WebhookError("X-Forwarded-Port", "it is not a port number", port[:40])
        host = f"{_strip_port(host)}:{port}"
    return f"{scheme}://{host}{path_qs}"


def _checked_host(name: str, host: str) -> str:
    match = _HOST.fullmatch(host)
    if match is None or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):
        raise WebhookError(name, "it is not a host with an optional port", host[:60])
    return host


def _strip_port(host: str) -> str:
    head, colon, tail = host.rpartition(":")
    return head if colon and not tail.endswith("]") and "]" not in tail else host


def valid_signature(auth_token: str, url: str, form: Form, signature: str) -> bool:
    """Twilio's check. The URL as rebuilt almost always matches, so one HMAC is tried
    first; only a miss pays for the validator's with- and without-port variants."""
    if not signature:
        return False
    if not signature.isascii():
        # compare_digest takes ASCII str only; a real signature is base64.
        raise WebhookError("X-Twilio-Signature", "it is not base64", "")
    validator = _validator(auth_token)
    if hmac.compare_digest(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))


@functools.lru_cache(maxsize=4)
def _validator(auth_token: str) -> RequestValidator:
    return RequestValidator(auth_token)


def content_variables(body: str, choices: Sequence[Choice]) -> str:
    """A template's variables: {{1}} is the text, {{2}} on the choices' titles in order
    (a template may use them for its buttons or list items, or fix its own)."""
    values = {"1": body} | {str(n): c.title for n, c in enumerate(choices, 2)}
    return json.dumps(values, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SendResult:
    sid: str
    status: str


class SendFailure(Exception):
    """A send that did not go through; `retryable` says whether trying again may help."""

    def __init__(self, retryable: bool, status: int | None, code: int | None, reason: str):
        self.retryable, self.status, self.code = retryable, status, code
        super().__init__(reason)


class TwilioSender:
    """Sends one WhatsApp message through twilio-python's `messages.create`."""

    def __init__(
        self, *, account_sid: str, auth_token: str, sender: str, api_base_url: str,
        timeout: float, status_callback: str | None,
        content_sids: Mapping[str, str] | None = None,
    ) -> None:
        http = TwilioHttpClient(timeout=timeout)
        self._session = http.session = _PacedSession()
        # requests reads the proxy and CA-bundle variables from os.environ again on every
        # request: read once here, they still apply. CPU per send 1.7-1.9 ms -> 1.1 ms.
        self._session.proxies = requests.utils.get_environ_proxies(api_base_url)
        self._session.verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                                or os.environ.get("CURL_CA_BUNDLE") or True)
        self._session.trust_env = False
        self._client = Client(account_sid, auth_token, http_client=http)
        # Point every domain the Messages API uses at the configured base (a fake, staging).
        self._client.api.base_url = api_base_url
        self._sender, self._callback = sender, status_callback
        self._content_sids = dict(content_sids or {})

    def send(
        self, phone: str, body: str, pace: Callable[[], object] = lambda: None,
        choices: Sequence[Choice] = (), key: str | None = None,
    ) -> SendResult:
        """Send one message; `pace` is called just before its request goes on the wire.

        A text with choices goes as the Content API template TWILIO_CONTENT_SIDS names
        for its `key` ("flow.text"), or else as numbered lines.
        """
        self._session.pace = pace
        content_sid = self._content_sids.get(key or "") if choices else None
        if content_sid is not None:
            fields: dict[str, Any] = {"content_sid": content_sid,
                                      "content_variables": content_variables(body, choices)}
        else:
            fields = {"body": numbered(body, choices)}
        try:
            message = self._client.messages.create(
                to=f"whatsapp:{phone}", from_=self._sender, status_callback=self._callback,
                **fields,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            status = int(exc.status) if exc.status else None
            code = int(exc.code) if exc.code else None
            retryable = status == 429 or (status is not None and status >= 500)
            raise SendFailure(retryable, status, code, f"HTTP {status} code {code}") from None
        except requests.RequestException as exc:
            raise SendFailure(True, None, None, type(exc).__name__) from None
        return SendResult(str(message.sid), str(message.status or "queued"))

    def close(self) -> None:
        self._session.close()


class _PacedSession(requests.Session):
    """Waits for the pacer's slot after twilio-python has built the request, not before.

    Building it takes a millisecond or more of Python, longer while webhooks hold the
    GIL; paced before that, sends reached Twilio up to 84 in one second at 80 MPS.
    """

    pace: Callable[[], object] = staticmethod(lambda: None)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.pace()
        return super().send(request, **kwargs)
