"""The pure core: the flow DSL, its checks and compilation, the conversation runtime, the
unit of work, intents, ports, errors, clock and text helpers. It imports the standard
library, `transitions` and itself, nothing else (tests/test_layering.py)."""
