"""Every shared fixture lives in the test-support package (tests/support/)."""

pytest_plugins = ["tests.support.plugin"]
