"""Settings: the defaults that let tertulia start locally with nothing set, and one
readable line (variable, value, what is expected) for every bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from engine.core.errors import ConfigError
from engine.settings import Secret, Settings, load_settings
from persistence.sealing import new_key

TOKEN = "f00dfacecafebeef0123456789abcdef"
SID = "AC" + "0123456789abcdef" * 2
# Every variable tertulia reads; cleared so the test's own environment cannot leak in.
SETTINGS_VARS = (
    "DATABASE_URL", "FLOWS_DIR", "DEFAULT_FLOW", "SESSION_TIMEOUT_MINUTES",
    "SESSION_WARNING_SECONDS", "SWEEP_INTERVAL_SECONDS", "STATS_INTERVAL_MINUTES",
    "TRIAL_DURATION_HOURS", "TRIAL_COOLDOWN_DAYS", "CREDENTIAL_PROVIDER", "INTENT_DETECTOR",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_FROM", "PUBLIC_BASE_URL",
    "TWILIO_API_BASE_URL", "TWILIO_HTTP_TIMEOUT_SECONDS", "OUTBOX_MAX_ATTEMPTS",
    "TWILIO_MAX_MPS", "LOG_LEVEL", "LOG_FORMAT", "SQLITE_SYNCHRONOUS", "ADMIN_TOKEN",
    "CONSOLE_LOCAL", "TWILIO_SIGNATURE_CHECK", "FORWARDED_ALLOW_IPS", "MAX_FORM_BYTES",
    "RATE_LIMIT_MESSAGES", "RATE_LIMIT_WINDOW_SECONDS", "MAX_INPUT_CHARS",
    "MAX_OUTBOUND_PER_TURN", "MAX_BODY_PARTS", "CREDENTIALS_KEY",
)
FROM = "whatsapp:+14155238886"
CREDENTIALS = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_WHATSAPP_FROM": FROM}


# -- defaults -----------------------------------------------------------------------------


def test_nothing_set_gives_the_documented_defaults() -> None:
    settings = Settings.from_mapping({})
    assert settings.database_url == "sqlite:///tertulia.db"
    assert settings.flows_dir == Path("./flows")
    assert settings.default_flow == "trial"
    assert settings.session_timeout == timedelta(minutes=3)
    assert settings.session_warning is None
    assert settings.sweep_interval_seconds == 60
    assert settings.stats_interval_seconds == 5 * 60
    assert settings.trial_duration == timedelta(hours=24)
    assert settings.trial_cooldown == timedelta(days=30)
    assert settings.credential_provider is None
    assert settings.twilio_account_sid is None and settings.twilio_auth_token is None
    assert settings.twilio_whatsapp_from is None and settings.public_base_url is None
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.twilio_http_timeout_seconds == 10
    assert settings.outbox_max_attempts == 8
    assert settings.twilio_max_mps == 80
    assert settings.sqlite_synchronous == "NORMAL"
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    assert settings.dry_run is True
    assert settings.twilio_signature_check is True
    assert settings.forwarded_allow_ips == "127.0.0.1,::1"
    assert settings.max_form_bytes == 16 * 1024
    assert (settings.rate_limit_messages, settings.rate_limit_window_seconds) == (30, 60)
    assert settings.max_input_chars == 1000
    assert (settings.max_outbound_per_turn, settings.max_body_parts) == (8, 3)


def test_empty_values_count_as_unset() -> None:
    empty = Settings.from_mapping({"SESSION_TIMEOUT_MINUTES": "", "PUBLIC_BASE_URL": "  ",
                                   "LOG_FORMAT": ""})
    assert empty == Settings.from_mapping({})


def test_decimal_minutes_and_seconds_are_allowed() -> None:
    settings = Settings.from_mapping({
        "SESSION_TIMEOUT_MINUTES": "0.05", "SESSION_WARNING_SECONDS": "1.5",
        "STATS_INTERVAL_MINUTES": "0.5", "SWEEP_INTERVAL_SECONDS": "0.25",
        "TWILIO_MAX_MPS": "0.3",
    })
    assert settings.session_timeout == timedelta(seconds=3)
    assert settings.session_warning == timedelta(seconds=1.5)
    assert settings.stats_interval_seconds == 30
    assert settings.sweep_interval_seconds == 0.25
    assert settings.twilio_max_mps == 0.3


def test_all_three_twilio_variables_turn_dry_run_off() -> None:
    env = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN,
           "TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886",
           "PUBLIC_BASE_URL": "https://bot.example.com/"}
    settings = Settings.from_mapping(env)
    assert settings.dry_run is False
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.reveal() == TOKEN
    assert settings.public_base_url == "https://bot.example.com"


# -- fail closed: all three Twilio credentials or none --------------------------------------


@pytest.mark.parametrize("missing", [
    ("TWILIO_AUTH_TOKEN",), ("TWILIO_ACCOUNT_SID",), ("TWILIO_WHATSAPP_FROM",),
    ("TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_FROM"),
])
def test_some_twilio_credentials_without_the_others_stop_start_up(
    missing: tuple[str, ...],
) -> None:
    # It used to be a dry run that accepted unsigned webhooks (issue 11, item 1).
    env = {key: value for key, value in CREDENTIALS.items() if key not in missing}
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping(env)
    message = str(caught.value)
    assert "\n" not in message
    for key in missing:
        assert key in message
    assert TOKEN not in message


def test_dry_run_only_when_no_twilio_credential_is_set() -> None:
    assert Settings.from_mapping({}).dry_run is True
    assert Settings.from_mapping(CREDENTIALS).dry_run is False


def test_the_signature_check_goes_off_only_when_asked_and_never_with_credentials() -> None:
    assert Settings.from_mapping({}).twilio_signature_check is True
    assert Settings.from_mapping({"TWILIO_SIGNATURE_CHECK": "off"}).twilio_signature_check \
        is False
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({**CREDENTIALS, "TWILIO_SIGNATURE_CHECK": "off"})
    assert str(caught.value).startswith("TWILIO_SIGNATURE_CHECK has value 'off'")
    with pytest.raises(ConfigError, match="on or off"):
        Settings.from_mapping({"TWILIO_SIGNATURE_CHECK": "maybe"})


def test_choices_are_case_insensitive() -> None:
    settings = Settings.from_mapping({"LOG_LEVEL": "debug", "LOG_FORMAT": "JSON",
                                      "SQLITE_SYNCHRONOUS": "full"})
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.sqlite_synchronous == "FULL"


# -- bad values: one line naming the variable, the value and what is expected ---------------

BAD_VALUES = [
    ("SESSION_TIMEOUT_MINUTES", "-1", "positive number"),
    ("SESSION_TIMEOUT_MINUTES", "abc", "positive number"),
    ("SESSION_TIMEOUT_MINUTES", "0", "positive number"),
    ("PUBLIC_BASE_URL", "ftp://x", "https://"),
    ("PUBLIC_BASE_URL", "not a url", "https://"),
    ("TWILIO_WHATSAPP_FROM", "+1415", "whatsapp:+14155238886"),
    ("TWILIO_ACCOUNT_SID", "XX", "AC"),
    ("TWILIO_ACCOUNT_SID", "AC" + "z" * 32, "32 hex digits"),
    ("FORWARDED_ALLOW_IPS", "proxy.example.com", "IP addresses or networks"),
    ("MAX_FORM_BYTES", "100", "at least 4096"),
    ("RATE_LIMIT_MESSAGES", "0", "1 or more"),
    ("MAX_INPUT_CHARS", "lots", "1 or more"),
    ("OUTBOX_MAX_ATTEMPTS", "0", "1 or more"),
    ("LOG_FORMAT", "xml", "json"),
    ("CREDENTIAL_PROVIDER", "nocolon", "module:Class"),
    ("INTENT_DETECTOR", "nocolon", "module:Class"),
    ("DATABASE_URL", "nonsense", "sqlite:///"),
    ("CONSOLE_LOCAL", "maybe", "1 or 0"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES,
                         ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_variable_value_and_expectation(
    key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({key: value})
    message = str(caught.value)
    assert "\n" not in message
    assert key in message
    assert repr(value) in message or f'"{value}"' in message
    assert "Expected" in message or "expected" in message
    assert expected in message
    assert (caught.value.key, caught.value.value) == (key, value)


@pytest.mark.parametrize("value", ["inf", "1e20", "nan"])
def test_an_infinite_huge_or_nan_timeout_is_a_config_error(value: str) -> None:
    # Not an OverflowError from timedelta(): start-up must still stop on one line.
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"SESSION_TIMEOUT_MINUTES": value})
    assert str(caught.value).startswith(f"SESSION_TIMEOUT_MINUTES has value {value!r}")


def test_the_auth_token_is_kept_as_a_secret_without_surrounding_spaces() -> None:
    settings = Settings.from_mapping({**CREDENTIALS, "TWILIO_AUTH_TOKEN": "  spaced token  "})
    assert settings.twilio_auth_token == Secret("spaced token")


def test_the_console_is_off_by_default_and_its_token_is_a_secret() -> None:
    assert Settings.from_mapping({}).admin_token is None
    assert Settings.from_mapping({}).console_local is False
    settings = Settings.from_mapping({"ADMIN_TOKEN": TOKEN, "CONSOLE_LOCAL": "yes"})
    assert settings.admin_token == Secret(TOKEN) and settings.console_local is True
    assert TOKEN not in repr(settings)


def test_a_short_admin_token_stops_start_up_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"ADMIN_TOKEN": "letmein"})
    message = str(caught.value)
    assert message.startswith("ADMIN_TOKEN has value '*******'") and "16 characters" in message
    assert "letmein" not in message


# -- secrets ------------------------------------------------------------------------------


def test_secret_prints_as_stars() -> None:
    secret = Secret(TOKEN)
    assert TOKEN not in str(secret) and TOKEN not in repr(secret)
    assert set(str(secret)) == {"*"}
    assert TOKEN not in f"{secret}" and TOKEN not in f"{secret!r} {[secret]}"
    assert secret.reveal() == TOKEN


def test_settings_repr_and_str_never_show_the_auth_token() -> None:
    settings = Settings.from_mapping({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN,
                                      "TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886"})
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert SID in repr(settings)  # the repr is still useful to ops


# -- load_settings: .env, overridden by the real environment ---------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in SETTINGS_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_load_settings_reads_dotenv_in_the_working_directory(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "# local settings\nSESSION_TIMEOUT_MINUTES=5\nLOG_LEVEL=DEBUG\n"
        f'TWILIO_AUTH_TOKEN="{TOKEN}"\nDEFAULT_FLOW=trial\nTWILIO_ACCOUNT_SID={SID}\n'
        f"TWILIO_WHATSAPP_FROM={FROM}\n", encoding="utf-8",
    )
    settings = load_settings()
    assert settings.session_timeout == timedelta(minutes=5)
    assert settings.log_level == "DEBUG"
    assert settings.twilio_auth_token == Secret(TOKEN)


def test_the_real_environment_overrides_dotenv(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SESSION_TIMEOUT_MINUTES=5\nLOG_LEVEL=DEBUG\n",
                                   encoding="utf-8")
    clean_env.setenv("LOG_LEVEL", "WARNING")
    settings = load_settings()
    assert settings.log_level == "WARNING"
    assert settings.session_timeout == timedelta(minutes=5)


def test_load_settings_without_dotenv_uses_the_environment_and_defaults(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SESSION_TIMEOUT_MINUTES", "0.05")
    settings = load_settings()
    assert settings.session_timeout == timedelta(seconds=3)
    assert settings.database_url == "sqlite:///tertulia.db"


def test_a_bad_value_in_dotenv_is_reported_like_one_in_the_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("OUTBOX_MAX_ATTEMPTS=zero\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="OUTBOX_MAX_ATTEMPTS has value 'zero'"):
        load_settings()


# -- the CLI stops on one line ----------------------------------------------------------------


def test_cli_start_up_error_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    env["SESSION_TIMEOUT_MINUTES"] = "-1"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "flows"], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert "SESSION_TIMEOUT_MINUTES" in lines[0] and "-1" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_content_sids_map_flow_texts_to_templates() -> None:
    sid = "HX" + "ab" * 16
    settings = Settings.from_mapping(
        {"TWILIO_CONTENT_SIDS": f"booking.ask_day={sid}, booking.confirm = {sid}"})

    assert settings.twilio_content_sids == {"booking.ask_day": sid, "booking.confirm": sid}


@pytest.mark.parametrize("raw", ["booking.ask_day=HX12", "ask_day=HX" + "ab" * 16,
                                 "booking.ask_day"])
def test_a_malformed_content_sid_entry_is_named(raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping({"TWILIO_CONTENT_SIDS": raw})

    assert str(raised.value).startswith(f"TWILIO_CONTENT_SIDS has value {raw!r}. Expected ")


def test_a_content_sid_for_a_text_without_choices_stops_wiring(tmp_path: Path) -> None:
    from engine.wiring import wire
    from tests.support.wiring import make_settings

    settings = make_settings(tmp_path, TWILIO_CONTENT_SIDS="trial.greeting=HX" + "ab" * 16)

    with pytest.raises(ConfigError) as raised:
        wire(settings)

    message = str(raised.value)
    assert message.startswith("TWILIO_CONTENT_SIDS has value 'trial.greeting'. Expected a ")
    assert "'booking.ask_day'" in message and "'booking.confirm'" in message


# -- the key that seals credentials at rest -------------------------------------------------


def test_a_credential_provider_without_a_credentials_key_refuses_to_start() -> None:
    # Fail closed: a real provider's passwords must not wait under a process-only key.
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"CREDENTIAL_PROVIDER": "acme.accounts:Provider"})
    message = str(caught.value)
    assert message.startswith("CREDENTIALS_KEY") and "CREDENTIAL_PROVIDER" in message
    assert "Fernet.generate_key" in message


def test_a_credentials_key_must_be_a_fernet_key_and_never_prints() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"CREDENTIALS_KEY": "not-a-key-at-all"})
    assert "not-a-key" not in str(caught.value) and "Fernet key" in str(caught.value)
    key = new_key()
    settings = Settings.from_mapping({"CREDENTIALS_KEY": key,
                                      "CREDENTIAL_PROVIDER": "acme.accounts:Provider"})
    assert settings.credentials_key is not None and settings.credentials_key.reveal() == key
    assert key not in repr(settings)
