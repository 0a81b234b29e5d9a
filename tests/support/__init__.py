"""The one test-support package: what more than one test folder needs.

- paths: the repository, the shipped flows, the flows broken on purpose.
- wiring: settings on a test's SQLite file, and `rows` as ops read them.
- stores: the registry of Store backends (sqlite, memory, postgres) the contract
  suite and the conversation tests run over.
- chat: one user's conversation through `Conversations`, on any store.
- trial: the shipped trial flow's states and texts, and the tables' invariants.
- twilio_fake: the loopback fake of Twilio's Messages API (also a CLI for the
  benchmarks: `python -m tests.support.twilio_fake`).
- recipients: the fake with faults per recipient.
- harness: the real `tertulia serve` subprocess, driven as Twilio drives it.
- plugin: the shared fixtures, registered by tests/conftest.py.

The test_*.py modules beside them test the fakes themselves. Nothing here is imported
by the product; keep this module free of imports, so the fake's CLI starts without
pytest.
"""
