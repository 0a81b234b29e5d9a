"""Adapter: intent detectors other than the built-in rules, named by INTENT_DETECTOR."""
