"""The status page webhook: a hint that makes us fetch the page now.

Statuspage subscriber webhooks carry no signature, so a POST is never taken
as truth: a valid one (right token, a JSON object body) schedules an
immediate re-fetch of that mailer's page, at most once per ``HINT_INTERVAL``
seconds per page across the fleet, and only the fetched page changes routing.
A forged or replayed payload can cause a fetch, never an outage.

Two ways to present the token (``status_webhook_token``):

- in the path, ``status/<alias>/<token>/``: any webhook sender can use it,
  but the path is what access logs print (the app masks it in Django's own
  loggers, see ``mailrouter.webhook_logging``, not in nginx's logs);
- as HTTP basic auth on ``status/<alias>/`` (any username, the token as the
  password; a sender typically takes ``https://mailrouter:<token>@host/...``),
  as Anymail's webhooks do: no secret in the path.

Both paths are also accepted without their trailing slash (a subscription
typed without it must not meet APPEND_SLASH's redirect or error).

The fetch runs on the process's background refresher thread, never inside
the request: the answer comes at once, however slow the status host is.

Answers: 202 (hint taken; ``{"scheduled": true|false}``: false when another
hint scheduled a fetch of that page moments ago), 404 (path form: unknown
alias or wrong token, the same answer, so neither can be probed), 401 with a
``WWW-Authenticate`` challenge (basic form: no, or wrong, credentials, or an
unknown alias), 405 (not POST), 400 (not a JSON object), 413 (body over 64
KiB). Never a 500, and no answer or log line of ours holds the token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseNotFound,
    JsonResponse,
)
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger("mailrouter")

MAX_BODY = 64 * 1024
#: Seconds between two hint-triggered fetches of one page, fleet-wide.
HINT_INTERVAL = 5


def _find_page(alias: str, token: str) -> Any:
    """(page, health settings) of a router whose token matches and that has a
    status page for ``alias``; None otherwise."""
    from .operations import configured_routers

    given = token.encode()
    for router in configured_routers():
        config = router.config
        expected = config.status_webhook_token
        if expected is None:
            continue
        # Constant time: how much of a guessed token matched must not show.
        if hmac.compare_digest(given, expected.encode()) and alias in config.status_pages:
            return config.status_pages[alias], config.health_settings
    return None


@csrf_exempt
def status_webhook(request: HttpRequest, alias: str, token: str | None = None) -> HttpResponse:
    response = _answer(request, alias, token)
    # Django logs every 4xx with the request path, which may hold the token:
    # mark the response as logged so the secret stays out of the logs.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def basic_auth_password(request: HttpRequest) -> str | None:
    """The password of the request's HTTP basic credentials, if any."""
    scheme, _, encoded = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def _unauthorized() -> HttpResponse:
    response = HttpResponse("credentials required", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Basic realm="mailrouter status webhook"'
    return response


def _answer(request: HttpRequest, alias: str, token: str | None) -> HttpResponse:
    basic = token is None
    given = basic_auth_password(request) if basic else token
    try:
        found = _find_page(alias, given) if given else None
    except Exception:  # broken settings must not turn into a 500 here
        logger.exception("status webhook cannot read the router configuration")
        found = None
    if found is None:
        return _unauthorized() if basic else HttpResponseNotFound(
            "not found", content_type="text/plain"
        )
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return HttpResponse("bad Content-Length", status=400, content_type="text/plain")
    if length > MAX_BODY:
        return HttpResponse("body too large", status=413, content_type="text/plain")
    body = request.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return HttpResponse("body too large", status=413, content_type="text/plain")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return HttpResponse("body is not JSON", status=400, content_type="text/plain")
    if not isinstance(payload, dict):
        return HttpResponse("expected a JSON object", status=400, content_type="text/plain")
    page, settings = found
    return JsonResponse({"scheduled": _schedule(page, settings)}, status=202)


def _schedule(page: Any, settings: Any) -> bool:
    """Queue a fetch of ``page`` on this process's background refresher: the
    request never waits for the status host (however slow or hostile)."""
    from .health.store import store_for
    from .shared_state.holder import holder_id
    from .status_pages.record import hint_part
    from .status_pages.refresh import refresher

    try:
        store = store_for(settings)
        if not store.add_value(page.alias, hint_part(page), holder_id(), HINT_INTERVAL):
            return False  # fetched moments ago on another hint
        refresher.request(page, store, settings.clock, force=True)
        return True
    except Exception:
        logger.exception("status webhook could not schedule a fetch of %s",
                         page.alias)
        return False
