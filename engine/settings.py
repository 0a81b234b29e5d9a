"""Typed settings from the environment and `.env`, built once in the composition root.

Modelled on Starlette's `Config`: each parser names the variable, the value and what
was expected, so a bad setting stops start-up with one readable line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from engine.core.errors import ConfigError
from engine.core.text import digits, is_e164
from persistence.db import normalise_url

__all__ = ["Secret", "Settings", "load_settings"]

T = TypeVar("T")


class Secret:
    """A string that prints as stars, so tokens never reach a log or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _number(key: str, raw: str, *, allow_zero: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    # NaN and infinity fail the range test; 1e8 keeps every timedelta we build in range.
    if not 0 <= value <= 1e8 or (value == 0 and not allow_zero):
        floor = "zero or more" if allow_zero else "a positive number"
        raise ConfigError(key, raw, f"{floor} (decimals allowed, e.g. 0.05)")
    return value


def _positive_int(key: str, raw: str) -> int:
    if not digits(raw.strip(), max_len=9) or int(raw) < 1:
        raise ConfigError(key, raw, "a whole number of 1 or more")
    return int(raw)


def _url(key: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, raw, "an http:// or https:// URL such as https://bot.example.com")
    return raw.rstrip("/")


def _choice(key: str, raw: str, options: tuple[str, ...]) -> str:
    if raw.upper() not in options and raw.lower() not in options:
        raise ConfigError(key, raw, "one of " + ", ".join(options))
    return raw.upper() if raw.upper() in options else raw.lower()


def _provider(key: str, raw: str) -> str:
    module, _, attr = raw.partition(":")
    if not module or not attr:
        raise ConfigError(key, raw, "a 'module:Class' path such as mycompany.accounts:Provider")
    return raw


def _detector(key: str, raw: str) -> str:
    module, _, attr = raw.partition(":")
    if not module or not attr:
        raise ConfigError(key, raw, "a 'module:Class' path such as mycompany.nlu:Detector")
    return raw


def _sender(key: str, raw: str) -> str:
    if not raw.startswith("whatsapp:") or not is_e164(raw[9:]):
        raise ConfigError(key, raw, "a WhatsApp sender such as whatsapp:+14155238886")
    return raw


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Every setting tertulia reads. Tests build one with `Settings.from_mapping`."""

    database_url: str = "sqlite:///tertulia.db"
    flows_dir: Path = Path("flows")
    default_flow: str = "trial"
    session_timeout: timedelta = timedelta(minutes=3)
    session_warning: timedelta | None = None
    sweep_interval_seconds: float = 60.0
    stats_interval_seconds: float = 300.0
    trial_duration: timedelta = timedelta(hours=24)
    trial_cooldown: timedelta = timedelta(days=30)
    credential_provider: str | None = None
    intent_detector: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: Secret | None = None
    twilio_whatsapp_from: str | None = None
    public_base_url: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_http_timeout_seconds: float = 10.0
    outbox_max_attempts: int = 8
    twilio_max_mps: float = 80.0
    sqlite_synchronous: str = "NORMAL"
    log_level: str = "INFO"
    log_format: str = "text"
    # self: a timeout job that fires early re-arms itself; message: re-arm on every message.
    timeout_rearm: str = "self"
    # How long the scheduler lease lasts unrenewed: a dead or frozen holder is replaced
    # within about this long.
    scheduler_lease_seconds: float = 5.0
    # How long a worker's claim on an outbox row holds before another may send it. Past
    # the Twilio timeout, so a slow send is never taken for a dead one.
    outbox_claim_seconds: float = 60.0
    # The web console (/console): on with a token; CONSOLE_LOCAL opens it to loopback only.
    admin_token: Secret | None = None
    console_local: bool = False
    # "flow.text" -> the Content API template (HX...) that sends that text's choices as
    # WhatsApp buttons or a list; other texts with choices go as numbered lines.
    twilio_content_sids: Mapping[str, str] = field(default_factory=dict)
    # Fail closed: webhooks are refused unless their signature checks out. Off only with
    # TWILIO_SIGNATURE_CHECK=off, for local use without credentials (refused with them).
    twilio_signature_check: bool = True
    # The peers whose X-Forwarded-* headers count (uvicorn's FORWARDED_ALLOW_IPS).
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Abuse limits (README, "Limits"): kept in the database, so they hold across workers.
    max_form_bytes: int = 16 * 1024
    rate_limit_messages: int = 30
    rate_limit_window_seconds: float = 60.0
    max_input_chars: int = 1000
    max_outbound_per_turn: int = 8
    max_body_parts: int = 3
    # Seals credentials messages at rest (Fernet); required with a CREDENTIAL_PROVIDER.
    credentials_key: Secret | None = None

    @property
    def dry_run(self) -> bool:
        """No Twilio credentials: outbound messages go to the log only."""
        return not (
            self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_from
        )

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from a plain mapping (the environment, or a test's dict)."""
        get = _Reader(env)
        warning = get("SESSION_WARNING_SECONDS", lambda k, v: _number(k, v, allow_zero=True))
        cooldown = get("TRIAL_COOLDOWN_DAYS", lambda k, v: _number(k, v, allow_zero=True))
        return cls(
            database_url=get("DATABASE_URL", _database_url) or cls.database_url,
            flows_dir=Path(get("FLOWS_DIR", lambda k, v: v) or "flows"),
            default_flow=get("DEFAULT_FLOW", lambda k, v: v) or "trial",
            session_timeout=timedelta(minutes=get("SESSION_TIMEOUT_MINUTES", _number) or 3),
            session_warning=timedelta(seconds=warning) if warning else None,
            sweep_interval_seconds=get("SWEEP_INTERVAL_SECONDS", _number) or 60.0,
            stats_interval_seconds=60 * (get("STATS_INTERVAL_MINUTES", _number) or 5),
            trial_duration=timedelta(hours=get("TRIAL_DURATION_HOURS", _number) or 24),
            trial_cooldown=timedelta(days=_default(cooldown, 30.0)),
            credential_provider=get("CREDENTIAL_PROVIDER", _provider),
            intent_detector=get("INTENT_DETECTOR", _detector),
            twilio_account_sid=get("TWILIO_ACCOUNT_SID", _account_sid),
            twilio_auth_token=get("TWILIO_AUTH_TOKEN", lambda k, v: Secret(v)),
            twilio_whatsapp_from=get("TWILIO_WHATSAPP_FROM", _sender),
            public_base_url=get("PUBLIC_BASE_URL", _url),
            twilio_api_base_url=get("TWILIO_API_BASE_URL", _url) or cls.twilio_api_base_url,
            twilio_http_timeout_seconds=get("TWILIO_HTTP_TIMEOUT_SECONDS", _number) or 10.0,
            outbox_max_attempts=get("OUTBOX_MAX_ATTEMPTS", _positive_int) or 8,
            twilio_max_mps=get("TWILIO_MAX_MPS", _number) or 80.0,
            sqlite_synchronous=get(
                "SQLITE_SYNCHRONOUS", lambda k, v: _choice(k, v, ("NORMAL", "FULL"))
            )
            or "NORMAL",
            log_level=get("LOG_LEVEL", lambda k, v: _choice(k, v, _LOG_LEVELS)) or "INFO",
            log_format=get("LOG_FORMAT", lambda k, v: _choice(k, v, ("text", "json"))) or "text",
            timeout_rearm=get(
                "TIMEOUT_REARM", lambda k, v: _choice(k, v, ("self", "message"))
            ) or "self",
            scheduler_lease_seconds=get("SCHEDULER_LEASE_SECONDS", _lease) or 5.0,
            outbox_claim_seconds=get("OUTBOX_CLAIM_SECONDS", _number) or 60.0,
            admin_token=get("ADMIN_TOKEN", _admin_token),
            console_local=get("CONSOLE_LOCAL", _flag) or False,
            twilio_content_sids=get("TWILIO_CONTENT_SIDS", _content_sids) or {},
            twilio_signature_check=_default(get("TWILIO_SIGNATURE_CHECK", _on_off), True),
            forwarded_allow_ips=get("FORWARDED_ALLOW_IPS", _allow_ips) or cls.forwarded_allow_ips,
            max_form_bytes=get("MAX_FORM_BYTES", _form_bytes) or cls.max_form_bytes,
            rate_limit_messages=get("RATE_LIMIT_MESSAGES", _positive_int) or 30,
            rate_limit_window_seconds=get("RATE_LIMIT_WINDOW_SECONDS", _number) or 60.0,
            max_input_chars=get("MAX_INPUT_CHARS", _positive_int) or cls.max_input_chars,
            max_outbound_per_turn=get("MAX_OUTBOUND_PER_TURN", _positive_int) or 8,
            max_body_parts=get("MAX_BODY_PARTS", _positive_int) or 3,
            credentials_key=get("CREDENTIALS_KEY", _fernet_key),
        )._checked()

    def _checked(self) -> Settings:
        """Checks that join two settings."""
        self._twilio_checked()
        if self.credential_provider and self.credentials_key is None:
            # Fail closed: real accounts' passwords must not wait in the outbox under a
            # key that dies with the process (the local generator's demo logins may).
            raise ConfigError(
                "CREDENTIALS_KEY", "unset",
                f"a key when CREDENTIAL_PROVIDER is set ({self.credential_provider}), "
                f"{_KEY_HINT}",
            )
        if self.outbox_claim_seconds <= self.twilio_http_timeout_seconds:
            raise ConfigError(
                "OUTBOX_CLAIM_SECONDS", self.outbox_claim_seconds,
                f"more than TWILIO_HTTP_TIMEOUT_SECONDS ({self.twilio_http_timeout_seconds}), "
                "or a slow send would be taken over and sent twice",
            )
        return self


    def _twilio_checked(self) -> None:
        """Fail closed: all three credentials or none (dry run), and the signature check
        is never off in front of real credentials."""
        given = {
            "TWILIO_ACCOUNT_SID": self.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": self.twilio_auth_token,
            "TWILIO_WHATSAPP_FROM": self.twilio_whatsapp_from,
        }
        missing = [key for key, value in given.items() if value is None]
        if 0 < len(missing) < len(given):
            raise ConfigError(
                " and ".join(missing), "",
                "a value: " + ", ".join(k for k in given if k not in missing) + " set "
                "without it would run half-configured (set all three, or none for a dry run)",
            )
        if not missing and not self.twilio_signature_check:
            raise ConfigError(
                "TWILIO_SIGNATURE_CHECK", "off",
                "on while Twilio credentials are set: 'off' is for local use without them",
            )


def _default(value: T | None, default: T) -> T:
    return default if value is None else value


def _lease(key: str, raw: str) -> float:
    value = _number(key, raw)
    if value < 2:
        raise ConfigError(key, raw, "at least 2 seconds: the holder renews about every second")
    return value


def _database_url(key: str, raw: str) -> str:
    if "://" not in raw:
        raise ConfigError(key, raw, "a SQLAlchemy URL such as sqlite:///tertulia.db")
    return normalise_url(raw)


def _admin_token(key: str, raw: str) -> Secret:
    # The token is the console's only lock: a short one falls to guessing.
    if len(raw) < _MIN_TOKEN:
        raise ConfigError(key, "*" * len(raw), f"at least {_MIN_TOKEN} characters, e.g. the "
                          "output of: python -c 'import secrets; print(secrets.token_urlsafe())'")
    return Secret(raw)


_MIN_TOKEN = 16
_KEY_HINT = ("e.g. the output of: python -c 'from cryptography.fernet import Fernet; "
             "print(Fernet.generate_key().decode())'")


def _fernet_key(key: str, raw: str) -> Secret:
    from persistence.sealing import Sealer

    try:
        Sealer(raw)
    except ValueError:
        raise ConfigError(key, "*" * min(len(raw), 8), f"a Fernet key (32 bytes, url-safe "
                          f"base64), {_KEY_HINT}") from None
    return Secret(raw)


def _flag(key: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(key, raw, "1 or 0 (true/false, yes/no)")
    return value in ("1", "true", "yes")


_CONTENT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")


def _content_sids(key: str, raw: str) -> dict[str, str]:
    """'booking.ask_day=HX…,booking.confirm=HX…' -> {'booking.ask_day': 'HX…', ...}."""
    sids: dict[str, str] = {}
    for entry in raw.split(","):
        text_key, _, sid = (part.strip() for part in entry.partition("="))
        if not _CONTENT_KEY.fullmatch(text_key) or not _CONTENT_SID.fullmatch(sid):
            raise ConfigError(key, entry.strip(), "comma-separated flow.text=HX… entries, "
                              "each naming a Content template SID ('HX' and 32 hex digits)")
        sids[text_key] = sid
    return sids


def _account_sid(key: str, raw: str) -> str:
    if ACCOUNT_SID.fullmatch(raw) is None:
        raise ConfigError(key, raw, "a Twilio Account SID: 'AC' followed by 32 hex digits")
    return raw


# Twilio's SID formats: two letters, then 32 lowercase hex digits.
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")


def _on_off(key: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
        raise ConfigError(key, raw, "on or off (off only for local use without credentials)")
    return value in ("on", "1", "true", "yes")


def _allow_ips(key: str, raw: str) -> str:
    for item in (part.strip() for part in raw.split(",")):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(key, raw, "'*' or comma-separated IP addresses or networks "
                              "such as 127.0.0.1,10.0.0.0/8") from None
    return raw


def _form_bytes(key: str, raw: str) -> int:
    value = _positive_int(key, raw)
    if value < 4096:
        raise ConfigError(key, raw, "at least 4096: a real Twilio webhook takes a few KB")
    return value


class _Reader:
    """Reads one variable, treating an empty value as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __call__(self, key: str, parse: Callable[[str, str], T]) -> T | None:
        raw = self._env.get(key, "").strip()
        return parse(key, raw) if raw else None


def load_settings(env_file: str | os.PathLike[str] | None = ".env") -> Settings:
    """Settings from `.env` (if present) overlaid by the real environment."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return Settings.from_mapping(merged)
