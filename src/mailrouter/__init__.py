"""django-mailrouter: a Django email backend that routes every message to the
right mailer, fails over in order, and never sends a message twice by its own
doing."""

from .classify import Stage, default_classifier
from .errors import ConfigurationError, DeliveryError, FailedMessage
from .operations import CandidateExplanation, Explanation
from .outcomes import Attempt, MessageStatus, Outcome

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "CandidateExplanation",
    "ConfigurationError",
    "DeliveryError",
    "Explanation",
    "FailedMessage",
    "MessageStatus",
    "Outcome",
    "Stage",
    "default_classifier",
]
