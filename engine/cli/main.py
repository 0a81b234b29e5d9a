"""The `tertulia` command (also `python -m engine`)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from engine.cli.ops import sessions, stats
from engine.core.errors import TertuliaError
from engine.core.text import is_e164
from engine.settings import Settings, load_settings

if TYPE_CHECKING:
    from engine.flowtests import Result

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    try:
        return load_settings()
    except TertuliaError as exc:
        raise click.ClickException(str(exc)) from None


def _fail_cleanly(fn: F) -> F:
    """Turn our own errors into one line and exit status 1, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TertuliaError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _phone(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not is_e164(value):
        raise click.BadParameter(f"{value!r} is not an E.164 number such as +5491123456789")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """tertulia: WhatsApp conversations as state machines."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes sharing the port (each a full worker).")
@_fail_cleanly
def serve(host: str, port: int, workers: int) -> None:
    """Run the webhook server, the scheduler and the outbound dispatcher."""
    import uvicorn

    from engine.monitoring import logs
    from engine.server.app import create_app
    from engine.server.worker import Worker

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    if workers > 1:
        _serve_workers(settings, host, port, workers)
        return
    # Built before the warnings, so a refusal (flows, database) is the only line printed.
    worker = Worker(settings, stats=True)
    _warn_about_mode(settings)
    app = create_app(worker)
    # Everything built so far (modules, the app, SQLAlchemy's tables) lives as long as
    # the process: moved out of the collector's reach, the full collections that the
    # per-message garbage triggers stop re-walking it (collection was 6% of the CPU in
    # a perf profile under load).
    gc.freeze()
    # proxy_headers off: the app's own ForwardedTrust reads them (engine/server/app.py).
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=10, proxy_headers=False)
    _uvicorn_server()(config).run()


def _serve_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    """N identical worker processes on one port: uvicorn's supervisor binds the socket,
    starts each child from the import string, and replaces a child that dies."""
    import uvicorn

    from engine.wiring import wire

    # Fail here, in one line, rather than N times in the children: flows, the database
    # (upgraded on SQLite, checked at head on PostgreSQL), the credential provider.
    wire(settings).close()
    _warn_about_mode(settings)
    if settings.credentials_key is None:
        # The children must open each other's sealed credentials messages: one key for
        # all of them, for as long as this supervisor lives (see persistence/sealing.py).
        from persistence.sealing import new_key

        os.environ["CREDENTIALS_KEY"] = new_key()
    uvicorn.run("engine.server.app:worker_app", factory=True, host=host, port=port,
                workers=workers, log_config=None, access_log=False, lifespan="on",
                timeout_graceful_shutdown=10, proxy_headers=False)


def _uvicorn_server() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after a clean shutdown, so a clean stop would
            # exit 143 and a service manager would report a failure.
            self._captured_signals.clear()
            # Responses that never end by themselves (the console's event streams) end
            # now, or the graceful shutdown would wait its whole timeout for them.
            for callback in getattr(getattr(self.config.app, "state", None), "on_exit", ()):
                callback()

    return Server


def _warn_about_mode(settings: Settings) -> None:
    import logging

    log = logging.getLogger("tertulia")
    if settings.dry_run:
        log.warning("DRY RUN: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_WHATSAPP_FROM "
                    "are not all set; outbound messages go to the log, marked dry_run")
    if not settings.twilio_signature_check:
        log.warning("!!! SIGNATURE CHECK OFF (TWILIO_SIGNATURE_CHECK=off): anyone who can "
                    "reach this server can post webhooks. For local use only; never expose "
                    "it like this. !!!")
    elif settings.twilio_auth_token is None:
        log.warning("webhooks are refused (403): no TWILIO_AUTH_TOKEN to check their "
                    "signature. For local tests without Twilio: TWILIO_SIGNATURE_CHECK=off")
    elif settings.public_base_url is None:
        log.warning("PUBLIC_BASE_URL is not set: signatures are checked against the URL "
                    "this server sees (X-Forwarded-* only from FORWARDED_ALLOW_IPS)")


@main.command()
@click.option("--phone", default="+5491100000000", show_default=True, callback=_phone,
              help="The number this terminal pretends to be.")
@click.option("--name", "profile_name", default=None, help="A WhatsApp profile name to greet.")
@click.option("--flow", "flow", default=None,
              help="The flow a new session starts in (default: DEFAULT_FLOW).")
@_fail_cleanly
def chat(phone: str, profile_name: str | None, flow: str | None) -> None:
    """Talk to a flow in the terminal (reads stdin line by line)."""
    from engine.channels.console import ConsoleChat
    from engine.monitoring import logs
    from engine.server.worker import Worker

    settings = _settings()
    logs.configure("WARNING", settings.log_format)
    worker = Worker(settings)
    if flow is not None:
        worker.conversations.flows.get(flow)  # FlowNotFound names the known ones
    worker.start()
    chat = ConsoleChat(worker.conversations, worker.store, phone, profile_name=profile_name,
                       flow=flow)
    interactive = sys.stdin.isatty()
    try:
        with chat.watching():
            chat.run(sys.stdin, prompt=(lambda: print("> ", end="", flush=True))
                     if interactive else (lambda: None))
    except KeyboardInterrupt:
        print()
    finally:
        worker.stop(flush_seconds=1.0)


@main.group(invoke_without_command=True)
@click.pass_context
@_fail_cleanly
def flows(ctx: click.Context) -> None:
    """List the flows in FLOWS_DIR (see also: check, draw)."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.cli.ops import warn_skipped
    from engine.flowfiles import load_flows_leniently

    settings = _settings()
    registry, skipped = load_flows_leniently(settings.flows_dir, settings.default_flow)
    warn_skipped(skipped)
    for flow in registry:
        marker = " (default)" if flow.name == registry.default_name else ""
        click.echo(f"{flow.name}{marker}\t{flow.file}\t{len(flow.states)} states: "
                   + ", ".join(flow.states))


@flows.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_fail_cleanly
def flows_check(files: tuple[Path, ...]) -> None:
    """Validate every flow, or only FILES; print each problem on one line."""
    from engine.flowfiles import check_files, default_flow_problems, flow_files

    settings = _settings()
    paths = list(files) or flow_files(settings.flows_dir)
    problems = check_files(paths)
    if not files:
        problems += default_flow_problems(paths, settings.default_flow)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{len(paths)} file(s) OK")


@flows.command("test")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_fail_cleanly
def flows_test(files: tuple[Path, ...]) -> None:
    """Run the conversation tests in FILES, or every *.tests file in FLOWS_DIR."""
    paths = list(files) or sorted(_settings().flows_dir.glob("*.tests"))
    if not paths:
        raise click.ClickException(
            f"no *.tests file in {_settings().flows_dir}. Fix: write one beside the flow "
            "(README, 'Conversation tests')")
    results = _run_conversation_tests(paths)
    failed = [r for r in results if r.failure is not None]
    for result in failed:
        click.echo(f"FAIL {result.failure}\n", err=True)
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed "
               f"({len(paths)} file(s))")
    if failed:
        raise SystemExit(1)


def _run_conversation_tests(paths: list[Path]) -> list[Result]:
    """Every case of every file; each file's flows load from its own folder."""
    from engine.core.registry import FlowRegistry
    from engine.flowfiles import load_flows
    from engine.flowtests import parse, run_suite

    loaded: dict[Path, FlowRegistry] = {}
    results: list[Result] = []
    for path in paths:
        suite = parse(path)
        folder = path.resolve().parent
        if folder not in loaded:
            loaded[folder] = load_flows(folder, suite.flow)
        results.extend(run_suite(suite, loaded[folder]))
    return results


@flows.command("draw")
@click.argument("name")
@_fail_cleanly
def flows_draw(name: str) -> None:
    """Print a Mermaid stateDiagram-v2 of flow NAME."""
    from engine.cli.ops import warn_skipped
    from engine.core.diagram import mermaid
    from engine.flowfiles import load_flows_leniently

    settings = _settings()
    registry, skipped = load_flows_leniently(settings.flows_dir, settings.default_flow)
    warn_skipped(skipped)
    click.echo(mermaid(registry.get(name)))


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@_fail_cleanly
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations up to REVISION."""
    from persistence import migrate
    from persistence.db import masked_url

    url = _settings().database_url
    migrate.upgrade(url, revision)
    click.echo(f"database at {revision}: {masked_url(url)}")


main.add_command(sessions)
main.add_command(stats)
