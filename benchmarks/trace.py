#!/usr/bin/env python
"""Follow one message through the router: which package modules run, how many
package function calls happen before the leaf is reached, and how often
control goes back into a module it had already left.

A router with default options (one catch-all route) and Django's dummy backend
as its only leaf sends one warm-up message, then one more message under
``sys.setprofile``. Printed:

- the ``mailrouter`` modules whose functions ran during that
  ``send_messages()`` (target after the restructuring: <= 10);
- the package function calls made before the leaf's ``send_messages`` is
  entered (target: <= 30);
- re-entries: a module entered again after control had moved on to another
  package module and returned to a caller elsewhere (the path should move one
  way; reporting callbacks aside), listed in order.

Usage (no Django project needed)::

    pip install -e .
    python benchmarks/trace.py           # text
    python benchmarks/trace.py --json    # figures as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from types import FrameType
from typing import Any

PACKAGE = "mailrouter"
LEAF = "django.core.mail.backends.dummy.EmailBackend"
TARGET_MODULES = 10
TARGET_CALLS = 30


def configure() -> Any:
    import django
    from django.conf import settings

    from mailrouter.testing.settings import mail_settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        INSTALLED_APPS=["mailrouter"],
        DEFAULT_FROM_EMAIL="shop@example.com",
        LOGGING_CONFIG=None,
        **mail_settings(
            {"leaf": {"BACKEND": LEAF, "OPTIONS": {}}},
            {"routes": [{"name": "default", "mailers": ["leaf"]}]},
        ),
    )
    django.setup()
    from mailrouter.testing.settings import default_mailer

    return default_mailer()


def message(number: int) -> Any:
    from django.core.mail import EmailMessage

    return EmailMessage(f"Order {number}", "Thanks!", to=[f"customer{number}@example.com"])


def trace_one(router: Any) -> dict[str, Any]:
    from django.core.mail.backends.dummy import EmailBackend as Dummy

    calls_before_leaf: int | None = None
    calls = 0
    modules: Counter[str] = Counter()
    sequence: list[str] = []  # package modules in the order control entered them

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls, calls_before_leaf
        if event != "call":
            return
        code = frame.f_code
        if code is Dummy.send_messages.__code__ and calls_before_leaf is None:
            calls_before_leaf = calls
        name = frame.f_globals.get("__name__", "")
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return
        calls += 1
        modules[name] += 1
        if not sequence or sequence[-1] != name:
            sequence.append(name)

    batch = [message(2)]
    sys.setprofile(profile)
    try:
        sent = router.send_messages(batch)
    finally:
        sys.setprofile(None)
    assert sent == 1, f"the traced message was not accepted ({sent})"
    reentered = [name for index, name in enumerate(sequence) if name in sequence[:index]]
    return {
        "modules": dict(sorted(modules.items())),
        "module_count": len(modules),
        "calls_total": calls,
        "calls_before_leaf": calls_before_leaf,
        "transitions": len(sequence) - 1,
        "reentries": len(reentered),
        "reentered_modules": sorted(set(reentered)),
        "sequence": sequence,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    router = configure()
    assert router.send_messages([message(1)]) == 1  # warm-up: caches, imports
    figures = trace_one(router)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"package modules that ran: {figures['module_count']} (target <= {TARGET_MODULES})")
    for name, count in figures["modules"].items():
        print(f"  {name:40} {count:4} calls")
    print(
        f"package calls before the leaf: {figures['calls_before_leaf']} "
        f"(target <= {TARGET_CALLS}); {figures['calls_total']} in the whole send"
    )
    print(
        f"control moved between package modules {figures['transitions']} times; "
        f"{figures['reentries']} re-entries into a module already left "
        f"({', '.join(figures['reentered_modules']) or 'none'})"
    )


if __name__ == "__main__":
    main()
