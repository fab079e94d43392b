"""Django's own backend tests (locmem, file, console, SMTP) through the router.

Django's ``tests/mail`` of the installed release is downloaded once per run
(and cached; a failed download fails this test). Each backend test class runs
twice: as Django wrote it (what fails there fails for reasons of this
environment, e.g. the Python patch release) and with the router wrapping
Django's backend as its only leaf. Every test that fails only through the
router must be an expected difference with its reason
(``tests.django_conformance.DIFFERENCES``), and every expected difference must
still fail: the list, and docs/reference/django-differences.md, stay true.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import django
import pytest

from . import django_conformance
from .django_conformance import (
    DIFFERENCES,
    DownloadFailed,
    django_mail_tests,
    expected_failures,
    run_backend_tests,
)

RELEASE = f"{django.VERSION[0]}.{django.VERSION[1]}"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "django-differences.md"



def test_djangos_backend_tests_pass_through_the_router_but_the_listed_differences() -> None:
    module = django_mail_tests()
    ran, failing_anyway = run_backend_tests(module, through_router=False)
    ran_routed, failing = run_backend_tests(module, through_router=True)
    assert ran == ran_routed
    # Without aiosmtpd Django skips its SMTP tests; the suite's test deps have it.
    assert importlib.util.find_spec("aiosmtpd") is not None, "install aiosmtpd (test extra)"
    expected = expected_failures(RELEASE)
    differences = {name: text for name, text in failing.items() if name not in failing_anyway}
    unexplained = {name: text.strip().splitlines()[-1] for name, text in differences.items()
                   if name not in expected}
    assert not unexplained, f"fail only through the router, not listed: {unexplained}"
    fixed = sorted(set(expected) - set(differences) - set(failing_anyway))
    assert not fixed, f"listed as differences but pass now (update the list and the page): {fixed}"
    assert ran > 100


def test_the_differences_page_mirrors_the_list() -> None:
    page = PAGE.read_text()
    headings = [line[4:].strip() for line in page.splitlines() if line.startswith("### ")]
    assert headings == [d.title for d in DIFFERENCES]
    flat = " ".join(page.split())
    for difference in DIFFERENCES:
        assert " ".join(difference.reason.split()) in flat, difference.title
        for release, tests in difference.tests.items():
            for test in tests:
                assert f"`{test}`" in page, (release, test)


def test_a_failed_download_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(django_conformance, "CACHE", tmp_path)
    with pytest.raises(DownloadFailed, match=r"could not download the Django 1\.0\.999 sdist"):
        django_conformance.sdist("1.0.999")
