"""Loading the intent detector INTENT_DETECTOR names, such as an NLU service's client.

The class is built with no arguments and must have `detect(text, *, expects=None)`
returning one of engine.core.intents.INTENTS or None (engine.core.intents.IntentDetector).
It then reads every message of every flow, in place of the built-in rules; a flow's
`vocabulary` only extends the built-in rules.
"""

from __future__ import annotations

import importlib

from engine.core.errors import ConfigError
from engine.core.intents import IntentDetector

__all__ = ["load_detector"]


def load_detector(path: str | None) -> IntentDetector | None:
    """The detector named `module:Class`, or None for the built-in rules."""
    if path is None:
        return None
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("INTENT_DETECTOR", path, f"an importable module:Class ({exc})") from None
    detector = factory()
    if not isinstance(detector, IntentDetector):
        raise ConfigError("INTENT_DETECTOR", path,
                          "a class with a detect(text, *, expects=None) method")
    return detector
