"""Conversation tests for flow authors: `*.tests` files beside the flows, run by
`tertulia flows test` and by pytest. The format is in engine.flowtests.parse."""

from engine.flowtests.parse import Suite, parse
from engine.flowtests.run import Result, run_case, run_suite

__all__ = ["Result", "Suite", "parse", "run_case", "run_suite"]
