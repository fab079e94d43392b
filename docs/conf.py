"""Sphinx configuration for the django-mailrouter documentation.

Builds offline: no intersphinx fetching. References to our own objects must
resolve (``nitpicky``); only targets in other projects' documentation, which
cannot be resolved without the network, are listed in ``nitpick_ignore_regex``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

# autodoc imports the package; its modules need configured (empty) settings.
if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "mailrouter", "mailrouter.outbox"],
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
django.setup()

import mailrouter  # noqa: E402

project = "django-mailrouter"
author = "django-mailrouter developers"
copyright = "2026, django-mailrouter developers"
release = mailrouter.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"django-mailrouter {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# Every cross-reference must resolve ...
nitpicky = True
# ... except into documentation we cannot reach offline: the standard library,
# Django and Anymail. Never list a ``mailrouter`` target here: document it.
_THIRD_PARTY = "({})".format("|".join([
    # other projects
    "django", "anymail", "boto3", "botocore", "requests", "redis",
    # the standard library
    "asyncio", "collections", "concurrent", "contextlib", "dataclasses", "datetime", "email",
    "enum", "http", "logging", "smtplib", "socket", "ssl", "threading", "types", "typing",
]))
nitpick_ignore_regex = [
    (r"py:.*", _THIRD_PARTY + r"(\..*)?"),
]
# Django's EmailMessage, as written in annotations imported only for type checking.
nitpick_ignore = [("py:class", "EmailMessage")]
