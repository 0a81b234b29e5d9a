"""The web console at /console: a simulator for flow authors and a page for ops.

`mount(app, worker)` adds it to the server's app. Without ADMIN_TOKEN (or
CONSOLE_LOCAL=1) every path under /console answers 404 with how to turn it on.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from engine.console.routes import PREFIX, console_app
from engine.server.worker import Worker

__all__ = ["mount"]


def mount(app: Starlette, worker: Worker) -> None:
    """Serve the console under /console, and end its event streams when the server stops
    (the CLI calls `app.state.on_exit` on SIGTERM: open streams would otherwise hold the
    graceful shutdown for its whole timeout)."""
    console, hub = console_app(worker)
    app.router.routes.append(Mount(PREFIX, app=console))
    on_exit = getattr(app.state, "on_exit", [])
    app.state.on_exit = [*on_exit, hub.close]
