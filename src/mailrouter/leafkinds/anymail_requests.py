"""django-anymail ESP backends over requests (Mailgun, Postmark, SendGrid,
... and Anymail's other backends), and what every Anymail kind shares.

Nothing here imports Anymail or requests: a process that never uses them must
not pay for their import (a few hundred ms, on the first failed attempt: a
stall exactly when a mailer goes down and the fleet must learn it fast). An
Anymail class can only exist once its module is loaded, so it is looked up
in ``sys.modules``.

How far an attempt got is watched, as for SMTP:

- Anymail's own steps, on the backend instance: ``post_to_esp`` is the
  request (before it: building the payload, ``pre_send``, nothing has left);
  ``run_post_send`` starts once the ESP's answer is parsed into
  ``message.anymail_status``.
- Inside the request, the HTTP connection (urllib3, used by requests and by
  boto3): connecting, writing the request, request fully written. The
  connection classes of the backend's own pools are swapped for subclasses
  that report to the attempt running in this context; connections not made
  through those pools (a proxy, a custom session) report nothing, and the stage
  then stays ``REQUEST``: the request may have left.

An ESP can answer "200 OK" and still have refused some or all recipients
(a Postmark batch reports an ``ErrorCode`` per message). Anymail records the
per-recipient result in ``message.anymail_status.recipients`` (and sometimes
raises with the raw answer instead). The rule, the same as for SMTP partial
refusals:

- every recipient refused → the outcome their errors imply (the most
  cautious one: uncertain, then not sent, then incompatible, then rejected);
- some refused → accepted, with a note naming them and why;
- none refused → accepted.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core.mail import EmailMessage

from .. import send_guard
from ..outcomes import Outcome
from .base import (
    AUTHENTICATED,
    REACHABLE,
    PlainKind,
    ProbeFailed,
    Stage,
    TransportNames,
    Verdict,
    Watch,
    classify_http_status,
    error_chain,
    transport_outcome,
)

# -- What the router relies on in Anymail and urllib3 (checked against the
# installed versions by tests/test_leaf_kinds.py) --------------------------------

#: Anymail's backend steps that are wrapped on each backend instance.
WATCHED_STEPS = ("post_to_esp", "run_post_send")
#: urllib3: a pool manager's pool classes, a pool's connection class.
POOL_CLASSES = "pool_classes_by_scheme"
CONNECTION_CLASS = "ConnectionCls"
#: requests: an HTTPAdapter's proxy manager factory.
PROXY_MANAGER_FACTORY = "proxy_manager_for"

#: Anymail's per-message attributes (``anymail.message.AnymailMessageMixin``),
#: read from any EmailMessage that has them.
MESSAGE_ATTRIBUTES = (
    "envelope_sender",
    "metadata",
    "send_at",
    "tags",
    "track_clicks",
    "track_opens",
    "template_id",
    "merge_data",
    "merge_global_data",
    "merge_headers",
    "merge_metadata",
    "esp_extra",
)

#: Anymail message attributes a plain (non-ESP) mailer cannot express: a batch
#: send would go out as one message with every recipient in To:, a template
#: as an empty body.
ESP_ONLY_ATTRIBUTES: tuple[str, ...] = (
    "merge_data",
    "merge_metadata",
    "merge_headers",
    "template_id",
)

#: How the outbox payload names an AnymailMessage (stored in rows: never change).
PAYLOAD_KIND = "anymail"


def _module(name: str) -> Any:
    return sys.modules.get(name)


def is_anymail_backend(backend: Any) -> bool:
    """Whether ``backend`` is one of django-anymail's ESP backends (checked
    without importing Anymail in processes that do not use it)."""
    base = _module("anymail.backends.base")
    return base is not None and isinstance(backend, base.AnymailBaseBackend)


def message_class() -> type[EmailMessage] | None:
    """``AnymailMessage``, or None without Anymail installed."""
    try:
        from anymail.message import AnymailMessage
    except ImportError:  # Anymail is optional
        return None
    cls: type[EmailMessage] = AnymailMessage
    return cls


def is_unset(value: Any) -> bool:
    """Whether ``value`` is Anymail's marker for an attribute left unset."""
    try:
        from anymail.utils import UNSET
    except ImportError:
        return False
    return value is UNSET


# -- Watching an attempt -------------------------------------------------------------

_ATTRIBUTE = "_mailrouter_stage"
_CURRENT: contextvars.ContextVar[HTTPStage | None] = contextvars.ContextVar(
    "mailrouter_http_stage", default=None
)


class HTTPStage:
    """Mutable marker attached to one Anymail backend: how far the current
    message got."""

    __slots__ = ("stage",)
    #: ``post_to_esp`` runs the message's send guard (``mailrouter.send_guard``)
    #: as the request starts, after Anymail's ``pre_send`` receivers.
    guards_send = True

    def __init__(self) -> None:
        self.stage = Stage.PREPARE


def watch_steps(backend: Any, track_transport: Callable[[Any], bool]) -> HTTPStage | None:
    """Attach (once) a stage marker to an Anymail backend and reset it.
    ``track_transport`` makes the backend's connections report (False if it
    cannot). Returns None for anything that is not an Anymail backend."""
    if not is_anymail_backend(backend):
        return None
    marker: HTTPStage | None = backend.__dict__.get(_ATTRIBUTE)
    if marker is None:
        marker = HTTPStage()
        original_post = backend.post_to_esp
        original_post_send = backend.run_post_send

        def post_to_esp(payload: Any, message: Any) -> Any:
            # Every pre_send receiver and the payload are done: the last moment
            # before the request.
            send_guard.run(message)
            # Watched connections report each step from here on; with none to
            # watch, the request may leave at any moment.
            marker.stage = Stage.PREPARE if track_transport(backend) else Stage.REQUEST
            token = _CURRENT.set(marker)
            try:
                response = original_post(payload, message)
            except BaseException as error:
                if marker.stage is Stage.PREPARE and _went_out(error):
                    # No watched connection reported, yet the error comes from
                    # the transport: it took a path we do not watch.
                    marker.stage = Stage.REQUEST
                raise
            finally:
                _CURRENT.reset(token)
            # An answer came back (Anymail raised for the HTTP errors it
            # recognizes); what it says is judged from here on.
            marker.stage = Stage.BODY_SENT
            return response

        def run_post_send(message: Any) -> Any:
            marker.stage = Stage.ANSWERED
            return original_post_send(message)

        backend.post_to_esp = post_to_esp
        backend.run_post_send = run_post_send
        backend.__dict__[_ATTRIBUTE] = marker
    marker.stage = Stage.PREPARE
    return marker


class _StageReporting:
    """Mixed into a urllib3 connection class: reports the attempt's stage."""

    def connect(self) -> None:
        marker = _CURRENT.get()
        if marker is None:
            super().connect()  # type: ignore[misc]
            return
        marker.stage = Stage.CONNECT
        super().connect()  # type: ignore[misc]
        marker.stage = Stage.ENVELOPE

    def request(self, *args: Any, **kwargs: Any) -> Any:
        marker = _CURRENT.get()
        if marker is None:
            return super().request(*args, **kwargs)  # type: ignore[misc]
        marker.stage = Stage.ENVELOPE
        result = super().request(*args, **kwargs)  # type: ignore[misc]
        # Headers and the whole body were handed to the socket.
        marker.stage = Stage.BODY_SENT
        return result


_REPORTING_POOLS: dict[type, type] = {}


def reporting_pool(pool_class: type) -> type:
    """A subclass of a urllib3 pool class whose connections report the stage."""
    reporting = _REPORTING_POOLS.get(pool_class)
    if reporting is None:
        connection_class = getattr(pool_class, CONNECTION_CLASS)
        reporting_connection = type(
            connection_class.__name__, (_StageReporting, connection_class), {}
        )
        reporting = _REPORTING_POOLS[pool_class] = type(
            pool_class.__name__,
            (pool_class,),
            {CONNECTION_CLASS: reporting_connection, "_mailrouter_reports_stage": True},
        )
    return reporting


def install(pool_manager: Any) -> bool:
    """Make a urllib3 pool manager's future pools report the stage. False if
    some of its connections will not report (pools it made before)."""
    classes = getattr(pool_manager, POOL_CLASSES, None)
    if not isinstance(classes, dict) or not all(
        hasattr(cls, CONNECTION_CLASS) for cls in classes.values()
    ):
        return False
    if all(getattr(cls, "_mailrouter_reports_stage", False) for cls in classes.values()):
        return bool(getattr(pool_manager, "_mailrouter_complete", False))
    pools = getattr(pool_manager, "pools", None)
    pool_manager._mailrouter_complete = pools is not None and len(pools) == 0
    # A new dict: urllib3 and botocore share theirs between managers.
    setattr(
        pool_manager,
        POOL_CLASSES,
        {scheme: reporting_pool(cls) for scheme, cls in classes.items()},
    )
    return True


def track_session(backend: Any) -> bool:
    """Make the backend's requests session adapters report the stage,
    proxies included. False if it has none."""
    session = getattr(backend, "session", None)
    adapters = getattr(session, "adapters", None)
    if not isinstance(adapters, dict) or not adapters:
        return False
    for adapter in adapters.values():
        if not install(getattr(adapter, "poolmanager", None)):
            return False
        _watch_proxies(adapter)
    return True


def _watch_proxies(adapter: Any) -> None:
    """requests creates a proxy's pool manager during the request."""
    original = getattr(adapter, PROXY_MANAGER_FACTORY, None)
    if original is None or getattr(original, "_mailrouter_watched", False):
        return

    def proxy_manager_for(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        install(manager)
        return manager

    proxy_manager_for._mailrouter_watched = True  # type: ignore[attr-defined]
    setattr(adapter, PROXY_MANAGER_FACTORY, proxy_manager_for)


_TRANSPORT_MODULES = ("requests", "urllib3", "botocore", "http.client", "ssl", "socket")


def _went_out(error: BaseException) -> bool:
    """Whether ``error`` comes from the transport or carries a response."""
    for link in error_chain(error):
        if isinstance(link, OSError) or getattr(link, "response", None) is not None:
            return True
        for cls in type(link).__mro__:
            if cls.__module__.split(".")[0] in _TRANSPORT_MODULES or cls.__module__ in (
                _TRANSPORT_MODULES
            ):
                return True
    return False


# -- Reading answers -----------------------------------------------------------------

#: Postmark answers HTTP 422 for problems with the message and with the account
#: alike; its ``ErrorCode`` tells them apart (postmarkapp.com/developer/api/overview).
#: Codes not listed keep the HTTP status's outcome (422: rejected). Recipient
#: problems (300 on To/Cc/Bcc, 406 inactive) reach us as AnymailRecipientsRefused.
POSTMARK_ERROR_CODES: dict[int, Outcome] = {
    100: Outcome.NOT_SENT,  # maintenance
    405: Outcome.NOT_SENT,  # not allowed to send (e.g. out of credits)
    412: Outcome.NOT_SENT,  # account pending approval
    413: Outcome.NOT_SENT,  # account may not send
    400: Outcome.INCOMPATIBLE,  # no sender signature for this From at this mailer
    401: Outcome.INCOMPATIBLE,  # sender signature not confirmed
    402: Outcome.INCOMPATIBLE,  # invalid JSON
    403: Outcome.INCOMPATIBLE,  # incompatible JSON
    409: Outcome.INCOMPATIBLE,  # JSON required
    410: Outcome.INCOMPATIBLE,  # too many batch messages
    411: Outcome.INCOMPATIBLE,  # forbidden attachment type (another mailer may allow it)
}

#: Anymail's send-time recipient statuses. "unknown" means the ESP took the
#: message without a per-recipient report: it may be delivered, so it counts
#: as accepted (never resent).
ANYMAIL_STATUSES: dict[str, Outcome] = {
    "queued": Outcome.ACCEPTED,
    "sent": Outcome.ACCEPTED,
    "scheduled": Outcome.ACCEPTED,
    "unknown": Outcome.ACCEPTED,
    "rejected": Outcome.REJECTED,
    "invalid": Outcome.REJECTED,
    "failed": Outcome.NOT_SENT,
}

#: When every recipient failed: the most cautious of their outcomes wins.
_PRECEDENCE = (Outcome.UNCERTAIN, Outcome.NOT_SENT, Outcome.INCOMPATIBLE, Outcome.REJECTED)


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    outcome: Outcome
    detail: str


def combine(results: Iterable[RecipientResult]) -> Verdict | None:
    results = list(results)
    if not results:
        return None
    refused = [r for r in results if r.outcome is not Outcome.ACCEPTED]
    if not refused:
        return Verdict(Outcome.ACCEPTED, None)
    names = ", ".join(f"{r.recipient} ({r.detail})" for r in refused)
    if len(refused) < len(results):
        return Verdict(Outcome.ACCEPTED, f"accepted, but not for: {names}")
    outcomes = {r.outcome for r in refused}
    outcome = next(o for o in _PRECEDENCE if o in outcomes)
    return Verdict(outcome, f"no recipient accepted: {names}")


def recipient_names(addresses: Any, count: int) -> list[str]:
    specs = [str(getattr(a, "addr_spec", a)) for a in addresses or []]
    if len(specs) == count:
        return specs
    return [f"item {index + 1}" for index in range(count)]


def postmark_outcome(code: Any, text: str) -> Outcome | None:
    """A Postmark ``ErrorCode`` (with its message) as an outcome; None for
    codes the tables do not know."""
    if code == 300 and "sender signature" in text.lower():
        # "Invalid 'From' address: ... is not a verified sender signature":
        # a setting of this mailer, not a fault of the message.
        return Outcome.INCOMPATIBLE
    return POSTMARK_ERROR_CODES.get(code) if isinstance(code, int) else None


def _postmark_422(error: BaseException) -> Outcome | None:
    try:
        body = error.response.json()  # type: ignore[attr-defined]
        code, text = body["ErrorCode"], str(body.get("Message", ""))
    except Exception:  # no response, not JSON, not Postmark's shape
        return None
    return postmark_outcome(code, text)


def _postmark_items(response: Any) -> list[dict[str, Any]] | None:
    """A Postmark 2xx answer's items (one per message of a batch)."""
    status = getattr(response, "status_code", None)
    if not isinstance(status, int) or not 200 <= status < 300:
        return None
    try:
        body = response.json()
    except Exception:
        return None
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) and "ErrorCode" in i for i in items):
        return None
    return items


def _postmark_item(item: dict[str, Any]) -> tuple[Outcome, str]:
    code, text = item.get("ErrorCode"), str(item.get("Message", ""))
    if code == 0:
        return Outcome.ACCEPTED, "ok"
    detail = f"ErrorCode {code}: {text}"[:200]
    outcome = postmark_outcome(code, text)
    if outcome is None and code in (300, 406):
        outcome = Outcome.REJECTED  # an invalid or inactive recipient
    # A documented per-item failure not in the tables: this item was not sent.
    return outcome or Outcome.NOT_SENT, detail


def _status_outcome(error: BaseException, status: int) -> Outcome:
    if status == 422 and getattr(error, "esp_name", None) == "Postmark":
        return _postmark_422(error) or Outcome.REJECTED
    return classify_http_status(status)


def _anymail_errors() -> Any:
    return _module("anymail.exceptions")


#: requests' and urllib3's error class names.
REQUESTS_TRANSPORT = TransportNames(
    connect_failed=frozenset(
        {
            "ConnectTimeout",
            "ConnectTimeoutError",
            "NewConnectionError",
            "NameResolutionError",
            "SSLError",
            "ProxyError",
            "InvalidURL",
            "MissingSchema",
            "InvalidSchema",
            "LocationParseError",
        }
    ),
    lost_after_request=frozenset(
        {
            "ReadTimeout",
            "ReadTimeoutError",
            "ProtocolError",
            "RemoteDisconnected",
            "ChunkedEncodingError",
            "IncompleteRead",
        }
    ),
    never_left=frozenset(
        {
            "ConnectTimeout",
            "ConnectTimeoutError",
            "NewConnectionError",
            "NameResolutionError",
            "InvalidURL",
            "MissingSchema",
            "InvalidSchema",
            "LocationParseError",
        }
    ),
)


class AnymailKind(PlainKind):
    """What every Anymail backend shares; subclasses add their transport and
    their ESPs' answers."""

    name = "anymail"
    family = "anymail"
    exclusive_attributes = ESP_ONLY_ATTRIBUTES
    transport = REQUESTS_TRANSPORT

    def recognises(self, backend: Any) -> bool:
        return is_anymail_backend(backend)

    def track_transport(self, backend: Any) -> bool:
        """Make the backend's own connection pools report the stage."""
        return track_session(backend)

    def watch(self, backend: Any) -> Watch | None:
        return watch_steps(backend, self.track_transport)

    def is_set(self, value: Any) -> bool:
        # AnymailMessage defaults these to its UNSET marker class, not None.
        return value is not None and not (isinstance(value, type) and value.__name__ == "UNSET")

    def refusal(self, attribute: str) -> str:
        return (
            f"message.{attribute} needs an ESP mailer (Anymail): this mailer would "
            "send it as one plain message"
        )

    # The ESP's answer.

    def bulk_codes(self, response: Any) -> list[str] | None:
        """Per-destination status codes in a bulk answer (None if none)."""
        return None

    def bulk_outcome(self, code: str) -> Outcome:
        return Outcome.NOT_SENT

    def response_outcome(self, response: Any) -> Outcome | None:
        """The outcome a parsed non-HTTP answer (``error.response``) implies."""
        return None

    def from_status(self, message: Any) -> Verdict | None:
        """The verdict recorded in ``message.anymail_status`` (None if there is none)."""
        status = getattr(message, "anymail_status", None)
        recipients = getattr(status, "recipients", None)
        if not isinstance(recipients, dict) or not recipients:
            return None
        codes = self.bulk_codes(getattr(status, "esp_response", None))
        if codes is not None and len(codes) != len(recipients):
            codes = None
        results = []
        for index, (address, recipient) in enumerate(recipients.items()):
            kind = str(getattr(recipient, "status", None))
            outcome = ANYMAIL_STATUSES.get(kind, Outcome.UNCERTAIN)
            detail = kind
            if codes is not None:
                outcome = self.bulk_outcome(codes[index])
                detail = f"{kind}: {codes[index]}"
            results.append(RecipientResult(str(address), outcome, detail))
        return combine(results)

    def from_error(self, error: BaseException) -> Verdict | None:
        """The verdict in a successful HTTP answer that Anymail raised about
        (a bulk send where every destination failed alike, a Postmark batch
        with failed items). None if ``error`` carries no such answer."""
        response = getattr(error, "response", None)
        payload = getattr(error, "payload", None)
        codes = self.bulk_codes(response)
        if codes is not None:
            to = getattr(payload, "recipients", {}).get("to", [])
            names = recipient_names(to, len(codes))
            return combine(
                RecipientResult(name, self.bulk_outcome(code), code)
                for name, code in zip(names, codes, strict=True)
            )
        items = _postmark_items(response)
        if items is not None:
            names = recipient_names(getattr(payload, "to_emails", []), len(items))
            return combine(
                RecipientResult(name, *_postmark_item(item))
                for name, item in zip(names, items, strict=True)
            )
        return None

    def accepted(self, message: EmailMessage, marker: Watch) -> Verdict | None:
        return self.from_status(message)

    def answered(self, message: EmailMessage, error: BaseException, stage: Stage) -> Verdict | None:
        if stage is Stage.ANSWERED:
            return self.from_status(message)
        if stage is Stage.BODY_SENT:
            return self.from_error(error)
        return None

    def unsent(self, message: EmailMessage, stage: Stage) -> Verdict | None:
        """A message the backend counted as not sent after the ESP answered."""
        return self.from_status(message) if stage is Stage.ANSWERED else None

    def declined(self, message: EmailMessage, stage: Stage) -> bool:
        # Anymail's own fresh status, untouched: a pre_send receiver cancelled the
        # send before any request (a backend that could not open its session never
        # gets that far, and has no status).
        status = getattr(message, "anymail_status", None)
        return (
            stage in (Stage.PREPARE, Stage.UNKNOWN)
            and status is not None
            and getattr(status, "status", None) is None
            and getattr(status, "esp_response", None) is None
        )

    # Errors.

    def answer_outcome(self, error: BaseException) -> Outcome | None:
        errors = _anymail_errors()
        if errors is not None and isinstance(
            error, (errors.AnymailRecipientsRefused, errors.AnymailInvalidAddress)
        ):
            return Outcome.REJECTED
        status = getattr(error, "status_code", None)
        if not isinstance(status, int):
            status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(status, int) and not 200 <= status < 300:
            return _status_outcome(error, status)
        answer = self.response_outcome(getattr(error, "response", None))
        if answer is not None and answer is not Outcome.UNCERTAIN:
            return answer
        return None

    def error_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        errors = _anymail_errors()
        if errors is None or not isinstance(error, errors.AnymailError):
            return None
        if isinstance(error, (errors.AnymailRecipientsRefused, errors.AnymailInvalidAddress)):
            return Outcome.REJECTED
        if isinstance(error, (errors.AnymailUnsupportedFeature, errors.AnymailSerializationError)):
            return Outcome.INCOMPATIBLE
        if isinstance(error, errors.AnymailConfigurationError):
            return Outcome.NOT_SENT
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            return _status_outcome(error, status)
        answer = self.response_outcome(getattr(error, "response", None))
        if answer is not None:
            return answer
        return transport_outcome(error, self.transport) or Outcome.UNCERTAIN

    def probe(self, backend: Any, timeout: float | None) -> tuple[str, str]:
        api_url = getattr(backend, "api_url", None)
        session = getattr(backend, "session", None)
        if not isinstance(api_url, str) or session is None:
            return super().probe(backend, timeout)
        base = configured_url(api_url)
        check = _ESP_CHECKS.get(getattr(backend, "esp_name", ""))
        if check is not None:
            return AUTHENTICATED, check(backend, session, base, timeout or 30)
        return REACHABLE, _http_reachability(session, base, timeout or 30)


# -- Probing -------------------------------------------------------------------------


def configured_url(api_url: str) -> str:
    """``api_url`` as configured: Anymail appends ``/`` to it, which lands
    after a query string (``...?key=x/``) when the URL has one."""
    parts = urlsplit(api_url)
    if parts.query.endswith("/"):
        return urlunsplit(parts._replace(query=parts.query[:-1]))
    return api_url


def endpoint(base: str, relative: str) -> str:
    """``relative`` under ``base``'s path, keeping ``base``'s query string."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "/" + relative
    return urlunsplit(parts._replace(path=path))


def _http_reachability(session: Any, url: str, timeout: float) -> str:
    """For HTTP API backends without a known credentials check: any answer
    short of a server error means DNS, TCP and TLS work."""
    response = session.request("HEAD", url, timeout=timeout)
    if response.status_code >= 500:
        raise ProbeFailed(f"API at {url} answered HTTP {response.status_code}")
    return f"API at {url} answered HTTP {response.status_code} (credentials not checked)"


def _answer(esp: str, what: str, url: str, response: Any) -> Any:
    """The JSON of a 200 answer; ProbeFailed for anything else."""
    status = response.status_code
    if status in (401, 403):
        raise ProbeFailed(f"{esp} refused the credentials ({what}: HTTP {status})")
    if status != 200:
        raise ProbeFailed(f"{esp} answered HTTP {status} to {what} at {url}")
    try:
        return response.json()
    except ValueError:
        raise ProbeFailed(f"{esp} answered {what} with a body that is not JSON") from None


def _mailgun(backend: Any, session: Any, base: str, timeout: float) -> str:
    domain = getattr(backend, "sender_domain", None)
    url = endpoint(base, f"domains/{domain}" if domain else "domains")
    response = session.request(
        "GET", url, auth=("api", backend.api_key), timeout=timeout,
        params=None if domain else {"limit": 1},
    )
    data = _answer("Mailgun", f"domain {domain}" if domain else "the domain list", url, response)
    if not domain:
        return "Mailgun accepted the API key (domain list read)"
    state = (data.get("domain") or {}).get("state", "unknown") if isinstance(data, dict) else "?"
    return f"Mailgun accepted the API key; domain {domain} is {state}"


def _postmark(backend: Any, session: Any, base: str, timeout: float) -> str:
    url = endpoint(base, "server")
    response = session.request(
        "GET", url, timeout=timeout,
        headers={"Accept": "application/json", "X-Postmark-Server-Token": backend.server_token},
    )
    data = _answer("Postmark", "the server read", url, response)
    name = data.get("Name", "?") if isinstance(data, dict) else "?"
    return f"Postmark accepted the server token (server {name!r})"


#: Anymail ``esp_name`` → its cheap authenticated read.
_ESP_CHECKS: dict[str, Callable[[Any, Any, str, float], str]] = {
    "Mailgun": _mailgun,
    "Postmark": _postmark,
}


ANYMAIL_REQUESTS = AnymailKind()
