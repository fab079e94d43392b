"""The default classifier's table, and replacing it with your own."""

from __future__ import annotations

import smtplib
import socket
from typing import Any

import pytest
import requests
from django.core.mail import EmailMessage
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from mailrouter import Outcome, Stage, default_classifier

from . import fakes
from .processes import child_env


def wrapped(outer: type[Exception], inner: BaseException) -> Exception:
    """An exception raised ``from`` another, as requests and Anymail do."""
    try:
        try:
            raise inner
        except BaseException as cause:
            raise outer("wrapped") from cause
    except Exception as error:
        return error


def connect_error() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/v3", reason))  # type: ignore[arg-type]


CASES: list[tuple[str, BaseException, Stage, Outcome]] = [
    ("refused at connect", ConnectionRefusedError(111, "refused"), Stage.CONNECT, Outcome.NOT_SENT),
    ("dns failure", socket.gaierror(-2, "Name unknown"), Stage.CONNECT, Outcome.NOT_SENT),
    ("greeting timeout", TimeoutError("timed out"), Stage.CONNECT, Outcome.NOT_SENT),
    ("auth failure", smtplib.SMTPAuthenticationError(535, b"bad"), Stage.CONNECT, Outcome.NOT_SENT),
    (
        "4xx at rcpt",
        smtplib.SMTPRecipientsRefused({"a@x": (450, b"later")}),
        Stage.ENVELOPE,
        Outcome.NOT_SENT,
    ),
    (
        "5xx at rcpt",
        smtplib.SMTPRecipientsRefused({"a@x": (550, b"no")}),
        Stage.ENVELOPE,
        Outcome.REJECTED,
    ),
    (
        "mixed rcpt",
        smtplib.SMTPRecipientsRefused({"a@x": (550, b"no"), "b@x": (451, b"l")}),
        Stage.ENVELOPE,
        Outcome.NOT_SENT,
    ),
    (
        "sender refused",
        smtplib.SMTPSenderRefused(553, b"no", "a@x"),
        Stage.ENVELOPE,
        Outcome.NOT_SENT,
    ),
    ("451 after body", smtplib.SMTPDataError(451, b"later"), Stage.BODY_SENT, Outcome.NOT_SENT),
    ("554 after body", smtplib.SMTPDataError(554, b"spam"), Stage.BODY_SENT, Outcome.REJECTED),
    ("drop before body", smtplib.SMTPServerDisconnected("gone"), Stage.ENVELOPE, Outcome.NOT_SENT),
    ("drop after body", smtplib.SMTPServerDisconnected("gone"), Stage.BODY_SENT, Outcome.UNCERTAIN),
    ("timeout after body", TimeoutError("timed out"), Stage.BODY_SENT, Outcome.UNCERTAIN),
    ("http connect error", connect_error(), Stage.UNKNOWN, Outcome.NOT_SENT),
    ("http connect timeout", requests.ConnectTimeout("t"), Stage.UNKNOWN, Outcome.NOT_SENT),
    ("http read timeout", requests.ReadTimeout("t"), Stage.UNKNOWN, Outcome.UNCERTAIN),
    (
        "http dropped",
        requests.ConnectionError(ProtocolError("Connection aborted.")),
        Stage.UNKNOWN,
        Outcome.UNCERTAIN,
    ),
    (
        "bad header",
        ValueError("Header values can't contain newlines"),
        Stage.ENVELOPE,
        Outcome.REJECTED,
    ),
    ("serialization", TypeError("not JSON serializable"), Stage.UNKNOWN, Outcome.INCOMPATIBLE),
    ("unknown error, unknown stage", RuntimeError("?"), Stage.UNKNOWN, Outcome.UNCERTAIN),
    ("unknown error at connect", RuntimeError("?"), Stage.CONNECT, Outcome.NOT_SENT),
    (
        "wrapped read timeout",
        wrapped(RuntimeError, requests.ReadTimeout("t")),
        Stage.UNKNOWN,
        Outcome.UNCERTAIN,
    ),
    (
        "too large at MAIL FROM",
        smtplib.SMTPSenderRefused(552, b"5.3.4 Message size exceeds fixed limit", "a@example.com"),
        Stage.ENVELOPE,
        Outcome.INCOMPATIBLE,
    ),
    (
        "too large after the body",
        smtplib.SMTPDataError(552, b"5.3.4 Message too big"),
        Stage.BODY_SENT,
        Outcome.INCOMPATIBLE,
    ),
    (
        "5.3.4 with another code",
        smtplib.SMTPDataError(554, b"5.3.4 Message too big for system"),
        Stage.BODY_SENT,
        Outcome.INCOMPATIBLE,
    ),
]


@pytest.mark.parametrize(
    ("error", "stage", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_default_classifier(error: BaseException, stage: Stage, expected: Outcome) -> None:
    assert default_classifier(error, stage) is expected


def tls_error() -> requests.exceptions.SSLError:
    import ssl

    reason = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    return requests.exceptions.SSLError(MaxRetryError(None, "/v3", reason))  # type: ignore[arg-type]


STAGE_CASES: list[tuple[str, BaseException, Stage, Outcome]] = [
    # The same error, judged by what may have left (issue #13).
    ("tls error connecting", tls_error(), Stage.CONNECT, Outcome.NOT_SENT),
    ("tls error reading the response", tls_error(), Stage.BODY_SENT, Outcome.UNCERTAIN),
    ("tls error, transport not watched", tls_error(), Stage.REQUEST, Outcome.UNCERTAIN),
    ("connect error, transport not watched", connect_error(), Stage.REQUEST, Outcome.NOT_SENT),
    ("dropped while writing", requests.ConnectionError(ProtocolError("aborted")),
     Stage.ENVELOPE, Outcome.NOT_SENT),
    ("TypeError building the payload", TypeError("x"), Stage.PREPARE, Outcome.INCOMPATIBLE),
    ("ValueError building the payload", ValueError("x"), Stage.PREPARE, Outcome.REJECTED),
    ("TypeError parsing a 2xx", TypeError("'NoneType' is not subscriptable"), Stage.BODY_SENT,
     Outcome.UNCERTAIN),
    ("TypeError after the answer", TypeError("x"), Stage.ANSWERED, Outcome.UNCERTAIN),
    ("ValueError after the request", ValueError("x"), Stage.REQUEST, Outcome.UNCERTAIN),
    ("refused by an audit db after the answer", ConnectionRefusedError(111, "x"),
     Stage.ANSWERED, Outcome.UNCERTAIN),
    ("refused by an audit db after the request", ConnectionRefusedError(111, "x"),
     Stage.BODY_SENT, Outcome.UNCERTAIN),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "stage", "expected"),
    [c[1:] for c in STAGE_CASES],
    ids=[c[0] for c in STAGE_CASES],
)
def test_default_classifier_by_stage(error: BaseException, stage: Stage, expected: Outcome) -> None:
    assert default_classifier(error, stage) is expected


def test_anymail_errors_by_stage() -> None:
    from anymail.exceptions import AnymailAPIError, AnymailUnsupportedFeature

    assert default_classifier(AnymailUnsupportedFeature("x"), Stage.PREPARE) is (
        Outcome.INCOMPATIBLE
    )
    # After the request, the ESP's answer decides; without one, uncertain.
    for status, outcome in [
        (503, Outcome.NOT_SENT),
        (429, Outcome.NOT_SENT),
        (400, Outcome.REJECTED),
        (502, Outcome.UNCERTAIN),
        (504, Outcome.UNCERTAIN),
        (200, Outcome.UNCERTAIN),
    ]:
        error = AnymailAPIError("x", status_code=status)
        assert default_classifier(error, Stage.BODY_SENT) is outcome, status
    assert default_classifier(AnymailAPIError("no answer"), Stage.BODY_SENT) is Outcome.UNCERTAIN


def test_anymail_errors() -> None:
    from anymail.exceptions import (
        AnymailAPIError,
        AnymailRecipientsRefused,
        AnymailSerializationError,
        AnymailUnsupportedFeature,
    )

    assert default_classifier(AnymailRecipientsRefused(), Stage.UNKNOWN) is Outcome.REJECTED
    assert default_classifier(AnymailUnsupportedFeature("x"), Stage.UNKNOWN) is Outcome.INCOMPATIBLE
    assert default_classifier(AnymailSerializationError(), Stage.UNKNOWN) is Outcome.INCOMPATIBLE
    for status, outcome in [
        (500, Outcome.NOT_SENT),
        (429, Outcome.NOT_SENT),
        (401, Outcome.NOT_SENT),
        (400, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (413, Outcome.INCOMPATIBLE),
        (200, Outcome.UNCERTAIN),
    ]:
        assert (
            default_classifier(AnymailAPIError("x", status_code=status), Stage.UNKNOWN) is outcome
        )


def cautious(error: BaseException, stage: Stage) -> Outcome:
    """A user's classifier: treat any 451 as uncertain, defer the rest."""
    if isinstance(error, smtplib.SMTPDataError) and error.smtp_code == 451:
        return Outcome.UNCERTAIN
    return default_classifier(error, stage)


def broken(error: BaseException, stage: Stage) -> Outcome:
    raise KeyError("bug")


@pytest.mark.parametrize(
    ("classifier", "expected"),
    [
        ("tests.test_classify.cautious", [("a", "uncertain")]),
        (
            "tests.test_classify.broken",
            [("a", "uncertain")],
        ),  # a broken classifier never duplicates
        (None, [("a", "not_sent"), ("b", "accepted")]),
    ],
)
def test_classifier_is_replaceable(configure: Any, classifier: str | None, expected: Any) -> None:
    mailers = {
        alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
        for alias in "ab"
    }
    options: dict[str, Any] = {"routes": [{"mailers": ["a", "b"]}]}
    if classifier:
        options["classifier"] = classifier
    router = configure(mailers, options)
    fakes.SCRIPTS["a"].append("tempfail")
    message = EmailMessage("s", "b", "f@example.com", ["t@example.com"])
    router.fail_silently = True
    router.send_messages([message])
    assert [(a.alias, a.outcome.value) for a in message.mailrouter_attempts] == expected


FIRST_FAILURE = """
import sys
from django.conf import settings
settings.configure(
    LOGGING_CONFIG=None,
    EMAIL_BACKEND="mailrouter.backend.RouterBackend",
    MAILROUTER={
        "MAILERS": {
            "dead": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                     "OPTIONS": {"host": "127.0.0.1", "port": int(sys.argv[1]), "timeout": 5}},
            "backup": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        },
        "OPTIONS": {"routes": [{"mailers": ["dead", "backup"]}]},
    },
)
import django
django.setup()
from django.core.mail import EmailMessage, get_connection
message = EmailMessage("s", "b", "f@example.com", ["t@example.com"])
get_connection().send_messages([message])
assert [a.outcome.value for a in message.mailrouter_attempts] == ["not_sent", "accepted"]
print(sorted(name for name in ("anymail", "requests") if name in sys.modules))
"""


def test_first_failure_imports_nothing_new() -> None:
    """Classifying a failure never imports Anymail (and requests): that import
    would stall every process on its first failed attempt, just when a mailer
    goes down."""
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    completed = subprocess.run(
        [sys.executable, "-c", FIRST_FAILURE, str(dead_port)],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
