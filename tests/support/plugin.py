"""The fixtures every test folder shares, registered by tests/conftest.py.

In process:
- `clock`: a FakeClock; `make_wiring(provider=None, **env)` wires the app on this
  test's SQLite file (env overrides settings) and closes it at teardown; `wiring` is
  `make_wiring()`.

Over every Store backend (tests/support/stores.py):
- `backend`: each entry of BACKENDS in turn (sqlite, memory; postgres when
  TERTULIA_TEST_POSTGRES_URL is set); `store` is its Store.
- `sql_backend`: each SQL entry in turn, with `raw` SQL as ops run it.

Against real servers:
- `fake`: a started `RecipientFakeTwilio` that checks the Basic auth the server sends.
- `server_factory(allow_traceback=False, **kwargs)`: starts a `harness.Server` in this
  test's tmp_path, wired to `fake`, and waits until it is healthy. At teardown every
  server is stopped (killed if SIGTERM does not work) and its log is checked: a
  "Traceback" fails the test unless the test injects a fault on purpose and says so
  with `allow_traceback=True` (it must then assert that the server recovered); the auth
  token in a log always fails it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from engine.core.clock import FakeClock
from engine.core.ports import CredentialProvider, Store
from engine.wiring import Wiring, wire
from tests.support.harness import AUTH_TOKEN, ServerFactory, Servers
from tests.support.postgres import scratch_database
from tests.support.recipients import RecipientFakeTwilio
from tests.support.stores import BACKENDS, SQL_BACKENDS, Backend, SqlBackend
from tests.support.wiring import make_settings

# Hypothesis keeps caches (parsed constants, Unicode tables) in ./.hypothesis even
# without an example database; keep them out of the working tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tertulia-tests-hypothesis")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_wiring(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., Wiring]]:
    """Wire the app on this test's database; env overrides settings."""
    built: list[Wiring] = []

    def factory(provider: CredentialProvider | None = None, **env: str) -> Wiring:
        wiring = wire(make_settings(tmp_path, **env), clock=clock, provider=provider)
        built.append(wiring)
        return wiring

    yield factory
    for wiring in built:
        wiring.close()


@pytest.fixture
def wiring(make_wiring: Callable[..., Wiring]) -> Wiring:
    return make_wiring()


@pytest.fixture
def fake() -> Iterator[RecipientFakeTwilio]:
    twilio = RecipientFakeTwilio(auth_token=AUTH_TOKEN).start()
    try:
        yield twilio
    finally:
        twilio.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets `E2E_BACKENDS = ("sqlite", "postgres")` runs each of its
    server tests once per database backend."""
    backends = getattr(metafunc.module, "E2E_BACKENDS", None)
    if backends and "e2e_backend" in metafunc.fixturenames:
        metafunc.parametrize("e2e_backend", backends)


@pytest.fixture
def e2e_backend() -> str:
    return "sqlite"


@pytest.fixture
def server_factory(
    tmp_path: Path, fake: RecipientFakeTwilio, e2e_backend: str
) -> Iterator[ServerFactory]:
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if e2e_backend == "postgres":
            env["DATABASE_URL"] = stack.enter_context(scratch_database())
        servers = Servers(tmp_path, fake.base_url, env=env)
        yield servers.start
        problems = servers.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each Store backend of the registry (tests/support/stores.py) in turn."""
    with BACKENDS[request.param](tmp_path) as made:
        yield made


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


@pytest.fixture(params=list(SQL_BACKENDS))
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlBackend]:
    """Each SQL backend in turn, for what only ops' SQL can see."""
    with BACKENDS[request.param](tmp_path) as made:
        assert isinstance(made, SqlBackend)
        yield made
