"""django-mailrouter: a Django email backend that routes every message to the
right mailer, fails over in order, and never sends a message twice by its own
doing.

Everything a project's code receives from the router or plugs into it is
importable from here: attempt records and statuses (``Attempt``, ``Outcome``,
``MessageStatus``), the classifier contract (``Classifier``, ``Stage``,
``default_classifier``), probe results (``ProbeResult``), what
``RouterBackend.explain()`` returns (``Explanation``, ``CandidateExplanation``),
the breaker states ``mailer_state_changed`` receivers get (``State``), and the
exceptions, which all derive from ``MailRouterError``.
"""

from .classify import Classifier, Stage, default_classifier
from .errors import (
    ConfigurationError,
    DeliveryError,
    FailedMessage,
    InvalidMessageError,
    MailRouterError,
)
from .health.breaker import State
from .operations import CandidateExplanation, Explanation
from .outcomes import Attempt, MessageStatus, Outcome
from .probe import ProbeResult

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "CandidateExplanation",
    "Classifier",
    "ConfigurationError",
    "DeliveryError",
    "Explanation",
    "FailedMessage",
    "InvalidMessageError",
    "MailRouterError",
    "MessageStatus",
    "Outcome",
    "ProbeResult",
    "Stage",
    "State",
    "default_classifier",
]
