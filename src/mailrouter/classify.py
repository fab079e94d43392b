"""The default failure classifier: exception + stage → Outcome.

A classifier is any callable ``f(error, stage) -> Outcome``. Set the router
option ``classifier`` to a dotted path to replace this one; a custom classifier
usually handles its own cases and delegates the rest to ``default_classifier``.

The decision depends on *when* the error happened, not just its type: a
dropped connection before the message body was sent means "not sent", the same
exception after the body was sent means the mailer may have the message.
This module keeps the stage rules only, in order (``RULES``); what a mailer's
answers and its library's errors mean is each leaf kind's knowledge
(``mailrouter.leafkinds``), asked at its place in that order.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

from . import leafkinds
from .leafkinds import MAY_HAVE_LEFT, Stage, by_stage, classify_http_status, error_chain
from .outcomes import MessageStatus, Outcome

__all__ = [
    "MAY_HAVE_LEFT",
    "RULES",
    "Classifier",
    "Stage",
    "classify_http_status",
    "default_classifier",
    "error_chain",
]

Classifier = Callable[[BaseException, Stage], Outcome]
#: One step of the default classifier: an outcome, or None to ask the next.
Rule = Callable[[BaseException, Stage], Outcome | None]


def nested_router(error: BaseException, stage: Stage) -> Outcome | None:
    """A nested router's failure for its one message: what its attempts say."""
    from .errors import DeliveryError

    if not isinstance(error, DeliveryError) or len(error.failures) != 1:
        return None
    failure = error.failures[0]
    if failure.status is MessageStatus.UNCERTAIN:
        return Outcome.UNCERTAIN
    if failure.status is MessageStatus.REJECTED:
        return Outcome.REJECTED
    if failure.attempts and all(a.outcome is Outcome.INCOMPATIBLE for a in failure.attempts):
        return Outcome.INCOMPATIBLE
    return Outcome.NOT_SENT


def while_connecting(error: BaseException, stage: Stage) -> Outcome | None:
    """Anything while opening the connection: nothing was sent."""
    return Outcome.NOT_SENT if stage is Stage.CONNECT else None


def after_sending(error: BaseException, stage: Stage) -> Outcome | None:
    """Once the request or body may have left, only the mailer's own answer
    (an HTTP status, an ESP error code) decides; anything else is uncertain."""
    if stage not in MAY_HAVE_LEFT:
        return None
    answer = leafkinds.answer_outcome(error)
    if answer is not None:
        return answer
    if stage is Stage.REQUEST and leafkinds.never_left(error):
        return Outcome.NOT_SENT
    return Outcome.UNCERTAIN


def while_writing(error: BaseException, stage: Stage) -> Outcome | None:
    """Lost while the message was still being written: incomplete, unusable."""
    if stage is Stage.ENVELOPE and (
        isinstance(error, OSError) or leafkinds.transport_outcome(error) is not None
    ):
        return Outcome.NOT_SENT
    return None


def configuration(error: BaseException, stage: Stage) -> Outcome | None:
    return Outcome.NOT_SENT if isinstance(error, ImproperlyConfigured) else None


def http_status(error: BaseException, stage: Stage) -> Outcome | None:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return classify_http_status(status) if isinstance(status, int) else None


def transport(error: BaseException, stage: Stage) -> Outcome | None:
    return leafkinds.transport_outcome(error)


def os_error(error: BaseException, stage: Stage) -> Outcome | None:
    return by_stage(stage) if isinstance(error, OSError) else None


def bad_message(error: BaseException, stage: Stage) -> Outcome | None:
    """Before the body went out, a value or type error is the message's."""
    if stage is Stage.BODY_SENT:
        return None
    if isinstance(error, (UnicodeError, TypeError)):
        return Outcome.INCOMPATIBLE
    if isinstance(error, ValueError):
        return Outcome.REJECTED
    return None


#: The default classifier's rules, asked in this order; the first outcome wins,
#: else ``by_stage``. The leaf kinds' rules run at three places: a mailer's
#: reply code (SMTP) before any stage rule, its answer once the request may
#: have left, its library's own errors before the generic ones.
RULES: tuple[Rule, ...] = (
    nested_router,
    while_connecting,
    leafkinds.reply_outcome,
    after_sending,
    while_writing,
    leafkinds.error_outcome,
    configuration,
    http_status,
    transport,
    os_error,
    bad_message,
)


def default_classifier(error: BaseException, stage: Stage) -> Outcome:
    """Decide an attempt's outcome from the exception and the stage it happened at.

    ==========================================  =================================
    what happened                               outcome
    ==========================================  =================================
    anything while opening the connection       not sent
    SMTP 4xx (RCPT, DATA), sender refused       not sent
    SMTP 5xx for every recipient / after DATA   rejected
    SMTP 552 / 5.3.4: too large for the mailer  incompatible
    connection lost or timeout before the body  not sent
    connection lost or timeout after the body   uncertain
    HTTP 5xx, 429, 401, 402, 403, 404           not sent
    HTTP 400, 422                               rejected
    HTTP 413 (too large for this mailer)        incompatible
    Postmark 422: by ErrorCode                  see leafkinds.anymail_requests
    Amazon SES (boto3): by error code           see leafkinds.boto
    HTTP connect error / connect timeout        not sent
    HTTP read timeout, dropped after request    uncertain
    HTTP 2xx with an unparsable body            uncertain
    Anymail recipients refused/invalid address  rejected
    Anymail unsupported feature/serialization   incompatible
    ValueError (bad header or address)          rejected
    TypeError, UnicodeError                     incompatible
    unknown error from a backend                uncertain (conservative)
    ==========================================  =================================
    """
    for rule in RULES:
        outcome = rule(error, stage)
        if outcome is not None:
            return outcome
    return by_stage(stage)
