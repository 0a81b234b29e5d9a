"""tertulia: a state-machine conversation engine for WhatsApp bots.

Flow authors import from here only.
"""

from engine.core.flow import Decision, Flow, Timeout, Turn, step
from engine.core.ports import CredentialRequest, Credentials, TrialRecord

__all__ = [
    "CredentialRequest",
    "Credentials",
    "Decision",
    "Flow",
    "Timeout",
    "TrialRecord",
    "Turn",
    "step",
]
