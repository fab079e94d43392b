"""Django's own backend tests, run through the router (tests/test_django_conformance.py).

The installed Django release's ``tests/mail`` is not installed with Django: it
comes from the release's sdist, downloaded from PyPI once (``pip download``)
and kept in a cache directory for later runs. Each backend test class of
Django's is subclassed so that ``create_backend(**kwargs)`` returns a router
whose only leaf is Django's backend built with those ``kwargs``; the
assertions are Django's, unchanged.
"""

from __future__ import annotations

import contextlib
import email.errors
import fcntl
import importlib
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import django
from django.conf import settings
from django.core import mail
from django.test import override_settings
from django.utils.module_loading import import_string

from mailrouter.backend import RouterBackend
from mailrouter.compat import HAS_MAILERS

#: Where sdists and their extracted tests are kept between runs.
CACHE = Path(
    os.environ.get("MAILROUTER_DJANGO_TESTS_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "django-mailrouter"
)
#: Django's backend test classes that are run through the router.
CLASSES = (
    "LocmemBackendTests", "FileBackendTests", "ConsoleBackendTests", "SMTPBackendTests",
    "SMTPBackendStoppedServerTests",
)


class DownloadFailed(AssertionError):
    """The sdist could not be fetched: the conformance run fails, never skips."""


def _pip_commands() -> list[list[str]]:
    commands = []
    if importlib.util.find_spec("pip") is not None:
        commands.append([sys.executable, "-m", "pip"])
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            commands.append([found])
    return commands


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One download at a time across test workers and matrix entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sdist(version: str) -> Path:
    """The Django ``version`` sdist, downloaded once into the cache."""
    target = CACHE / "sdist"
    with _locked(CACHE / f"django-{version}.lock"):
        found = sorted(target.glob(f"[dD]jango-{version}.tar.gz"))
        if found:
            return found[0]
        errors = []
        for pip in _pip_commands():
            with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
                completed = subprocess.run(
                    [*pip, "download", "--no-binary", ":all:", "--no-deps",
                     "--ignore-requires-python", "--disable-pip-version-check",
                     f"django=={version}", "-d", scratch],
                    capture_output=True, text=True, timeout=600, check=False,
                )
                got = sorted(Path(scratch).glob("*.tar.gz"))
                if completed.returncode == 0 and got:
                    target.mkdir(parents=True, exist_ok=True)
                    return Path(shutil.move(str(got[0]), target / got[0].name))
                errors.append(f"{' '.join(pip)}: exit {completed.returncode}: "
                              f"{completed.stderr.strip()[-500:]}")
        raise DownloadFailed(
            f"could not download the Django {version} sdist (its tests/mail is needed): "
            + ("; ".join(errors) or "no pip found")
        )


def django_mail_tests(version: str | None = None) -> ModuleType:
    """Django's ``tests/mail`` package of the installed release, importable."""
    version = version or django.__version__
    package = "django_mail_tests_" + version.replace(".", "_")
    root = CACHE / "extracted" / version
    with _locked(CACHE / f"extract-{version}.lock"):
        if not (root / package / "__init__.py").exists():
            archive = sdist(version)
            with tarfile.open(archive) as tar:
                prefix = next(
                    name for name in tar.getnames() if name.endswith("/tests/mail")
                )
                members = [m for m in tar.getmembers() if m.name.startswith(prefix + "/")]
                scratch = Path(tempfile.mkdtemp(dir=CACHE))
                tar.extractall(scratch, members=members, filter="data")
            staged = root / f".{package}.tmp"
            shutil.rmtree(staged, ignore_errors=True)
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(scratch / prefix), staged)
            staged.rename(root / package)
            shutil.rmtree(scratch, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if not hasattr(email.errors, "HeaderWriteError"):
        # Newer Python patch releases have it; Django's tests import it. Tests
        # that need its behaviour fail unrouted too, so they are no difference.
        email.errors.HeaderWriteError = type(  # type: ignore[attr-defined]
            "HeaderWriteError", (email.errors.MessageError,), {}
        )
    name = "test_backends" if (root / package / "test_backends.py").exists() else "tests"
    return importlib.import_module(f"{package}.{name}")


_tokens = itertools.count()
#: Leaves built by a test's create_backend(), handed to the router by token.
_PREPARED: dict[int, Any] = {}


class PreparedLeaf:
    """The BACKEND of the router's only leaf: returns the Django backend the
    test built (with the test's own keyword arguments)."""

    def __new__(cls, token: int, **_: Any) -> Any:
        return _PREPARED[token]


def routed(backend_class: type, alias: str | None, kwargs: dict[str, Any]) -> RouterBackend:
    """A router whose only leaf is ``backend_class(**kwargs)`` (built as the
    test would build it, with the test's alias)."""
    leaf_kwargs = dict(kwargs)
    if alias is not None:
        leaf_kwargs["alias"] = alias
    token = next(_tokens)
    _PREPARED[token] = backend_class(**leaf_kwargs)
    leaf = {"BACKEND": f"{__name__}.PreparedLeaf", "OPTIONS": {"token": token}}
    options = {"routes": [{"mailers": ["leaf"]}], "health": False}
    fail_silently = kwargs.get("fail_silently", False)
    with override_settings(MAILROUTER={"MAILERS": {"leaf": leaf}, "OPTIONS": options}):
        if alias is None:
            return RouterBackend(fail_silently)
        return RouterBackend(fail_silently, alias=alias, **options)


class RoutedBackendMixin:
    """Put first in the bases of one of Django's backend test classes.

    Django 6.1's classes build their backend with ``create_backend(**kwargs)``;
    5.2's and 6.0's with ``mail.get_connection(**kwargs)`` (and ``send_mail()``,
    ``EmailMessage.send()`` through it) of ``EMAIL_BACKEND``: both are routed.
    """

    backend_class: type

    def setUp(self) -> None:
        if not HAS_MAILERS:
            original = mail.get_connection

            def get_connection(backend: str | None = None, fail_silently: bool = False,
                               **kwargs: Any) -> Any:
                path = backend or settings.EMAIL_BACKEND
                if backend is not None and path != getattr(self, "email_backend", None):
                    return original(backend, fail_silently, **kwargs)
                kwargs["fail_silently"] = fail_silently
                return routed(import_string(path), None, kwargs)

            patcher = mock.patch.object(mail, "get_connection", get_connection)
            patcher.start()
            self.addCleanup(patcher.stop)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]

    def create_backend(self, **kwargs: Any) -> Any:
        # The test class's own create_backend() (defaults such as file_path)
        # runs unchanged; where it builds backend_class(**kwargs), a router
        # over that backend is built instead.
        real = type(self).backend_class

        def build(**options: Any) -> RouterBackend:
            return routed(real, options.pop("alias", None), options)

        self.backend_class = build  # type: ignore[assignment]
        try:
            return super().create_backend(**kwargs)  # type: ignore[misc]
        finally:
            del self.backend_class


def test_name(test: Any) -> str:
    """``Class.test_method``, for a subtest too (its parameters left out:
    one entry per test method)."""
    case = getattr(test, "test_case", test)
    return f"{type(case).__name__}.{case._testMethodName}"


def run_backend_tests(module: ModuleType, *, through_router: bool) -> tuple[int, dict[str, str]]:
    """Run each backend class of ``module``, as Django wrote it or through the
    router: (tests run, {"Class.test": failure text} of those that failed)."""
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for name in CLASSES:
        base = getattr(module, name, None)
        if base is None:
            continue
        if through_router:
            base = type(name, (RoutedBackendMixin, base), {"__module__": module.__name__})
        suite.addTests(loader.loadTestsFromTestCase(base))
    result = unittest.TestResult()
    suite.run(result)
    failed = {test_name(test): text for test, text in [*result.failures, *result.errors]}
    _PREPARED.clear()
    return result.testsRun, failed


# -- The expected differences ---------------------------------------------------------
#
# docs/reference/django-differences.md mirrors this list (a test keeps them in
# sync): each difference's title is a heading there, its text is said there, and
# every Django test named here is listed under it.


class Difference:
    def __init__(self, title: str, reason: str, tests: dict[str, tuple[str, ...]]) -> None:
        self.title = title
        self.reason = reason
        #: Django's tests that fail through the router because of it, per
        #: Django feature release ("6.1").
        self.tests = tests


DIFFERENCES = (
    Difference(
        "The router is not its leaf backend object",
        "Django's test reads or sets an attribute of the backend object itself "
        "(`connection`, `host`, `use_tls`, `ssl_context`, `file_path`, `prep_address`, ...). "
        "The router builds its leaves from the mailer settings and keeps them in its own "
        "pool: the leaf has these attributes, the router does not.",
        {"6.1": (
            "FileBackendTests.test_ignores_settings_when_initialized_with_alias",
            "SMTPBackendTests.test_email_ssl_attempts_ssl_connection",
            "SMTPBackendTests.test_email_ssl_certfile_default_disabled",
            "SMTPBackendTests.test_email_ssl_default_disabled",
            "SMTPBackendTests.test_email_ssl_keyfile_default_disabled",
            "SMTPBackendTests.test_email_tls_attempts_starttls",
            "SMTPBackendTests.test_email_tls_default_disabled",
            "SMTPBackendTests.test_prep_address_without_force_ascii",
            "SMTPBackendTests.test_reopen_connection",
            "SMTPBackendTests.test_send_messages_after_open_failed",
            "SMTPBackendTests.test_serialized_message_uses_crlf_line_ending",
            "SMTPBackendTests.test_server_open",
            "SMTPBackendTests.test_smtp_connection_uses_host_and_port",
            "SMTPBackendTests.test_smtp_connection_uses_timeout",
            "SMTPBackendTests.test_ssl_context_uses_ssl_certfile_and_keyfile",
        )},
    ),
    Difference(
        "A 30 s default timeout",
        "A leaf with a `timeout` attribute but no value gets the router's `timeout` "
        "option (30 s unless set; `timeouts` per alias): Django's SMTP backend waits "
        "forever by default, and one hanging mailer would hang every send.",
        {release: ("SMTPBackendTests.test_connection_timeout_default",)
         for release in ("5.2", "6.0", "6.1")},
    ),
    Difference(
        "open() connects nothing",
        "A router's `open()` holds the leaf connections opened afterwards until "
        "`close()`; each mailer is connected on its first message. A connection, TLS or "
        "authentication failure is a reason to fail over, recorded in the attempt and "
        "in the mailer's health, never raised from `open()` or `with router:`.",
        {"6.1": (
            "SMTPBackendTests.test_auth_attempted",
            "SMTPBackendTests.test_reopen_replaces_partial_connection",
        )},
    ),
    Difference(
        "fail_silently is the router's own argument",
        "The router accepts `fail_silently` (whether `send_messages()` raises its "
        "`DeliveryError`) without Django 6.1's deprecation warning for backends that do "
        "not support it; its leaves are always built to raise, so that the router sees "
        "every error.",
        {"6.1": ("LocmemBackendTests.test_fail_silently_arg_accepted",)},
    ),
    Difference(
        "A bug in the message is raised as InvalidMessageError",
        "Django raises `BadHeaderError` or `ValueError` at the bad message (a newline in "
        "a header, an invalid address), even with `fail_silently`. The router ends that "
        "message `rejected`, sends the rest of the batch, then raises "
        "`InvalidMessageError`: a `DeliveryError` and a `ValueError`, with Django's "
        "exception as its `__cause__`. `except ValueError` catches it; `except "
        "BadHeaderError` (deprecated in Django 6.1) does not.",
        {"5.2": ("LocmemBackendTests.test_validate_multiline_headers",)},
    ),
)


def expected_failures(release: str) -> dict[str, Difference]:
    """Django test → the difference that makes it fail through the router."""
    return {test: d for d in DIFFERENCES for test in d.tests.get(release, ())}
