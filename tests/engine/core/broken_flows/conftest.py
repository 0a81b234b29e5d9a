"""The files here are flows broken on purpose, loaded by path in test_flowcheck.py and
test_cli.py. pytest must not import them as test modules."""

collect_ignore_glob = ["*.py"]
