"""Know how far an ESP API (Anymail) attempt got when it failed.

The same exception means opposite things at different moments: a TLS error
while connecting means nothing was sent; the same error while reading the
response means the ESP may have the message. A receiver of Anymail's
``post_send`` signal that raises does so after the ESP accepted the message.
So the stage is watched, as ``smtp_stage`` does for SMTP:

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
"""

from __future__ import annotations

import contextvars
import sys
from typing import Any

from . import send_guard
from .classify import Stage, error_chain

_ATTRIBUTE = "_mailrouter_stage"
_CURRENT: contextvars.ContextVar[HTTPStage | None] = contextvars.ContextVar(
    "mailrouter_http_stage", default=None
)


class HTTPStage:
    """Mutable marker attached to one Anymail backend: how far the current
    message got."""

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = Stage.PREPARE


def is_anymail_backend(backend: Any) -> bool:
    """Whether ``backend`` is one of django-anymail's ESP backends (checked
    without importing Anymail in processes that do not use it)."""
    base = sys.modules.get("anymail.backends.base")
    return base is not None and isinstance(backend, base.AnymailBaseBackend)


def watch(backend: Any) -> HTTPStage | None:
    """Attach (once) a stage marker to an Anymail backend and reset it.

    Returns None for anything that is not an Anymail backend.
    """
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
            marker.stage = Stage.PREPARE if _track_transport(backend) else Stage.REQUEST
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


# -- The HTTP connection -------------------------------------------------------------


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


def _reporting_pool(pool_class: type) -> type:
    reporting = _REPORTING_POOLS.get(pool_class)
    if reporting is None:
        connection_class = pool_class.ConnectionCls  # type: ignore[attr-defined]
        reporting_connection = type(
            connection_class.__name__, (_StageReporting, connection_class), {}
        )
        reporting = _REPORTING_POOLS[pool_class] = type(
            pool_class.__name__,
            (pool_class,),
            {"ConnectionCls": reporting_connection, "_mailrouter_reports_stage": True},
        )
    return reporting


def _install(pool_manager: Any) -> bool:
    """Make a urllib3 pool manager's future pools report the stage. False if
    some of its connections will not report (pools it made before)."""
    classes = getattr(pool_manager, "pool_classes_by_scheme", None)
    if not isinstance(classes, dict) or not all(
        hasattr(cls, "ConnectionCls") for cls in classes.values()
    ):
        return False
    if all(getattr(cls, "_mailrouter_reports_stage", False) for cls in classes.values()):
        return bool(getattr(pool_manager, "_mailrouter_complete", False))
    pools = getattr(pool_manager, "pools", None)
    pool_manager._mailrouter_complete = pools is not None and len(pools) == 0
    # A new dict: urllib3 and botocore share theirs between managers.
    pool_manager.pool_classes_by_scheme = {
        scheme: _reporting_pool(cls) for scheme, cls in classes.items()
    }
    return True


def _track_transport(backend: Any) -> bool:
    """Make the backend's own connection pools report the stage: requests'
    session adapters (Mailgun, Postmark, ...) or boto3's client (Amazon SES),
    proxies included. False if it has neither."""
    session = getattr(backend, "session", None)
    adapters = getattr(session, "adapters", None)
    if isinstance(adapters, dict) and adapters:
        for adapter in adapters.values():
            if not _install(getattr(adapter, "poolmanager", None)):
                return False
            _watch_proxies(adapter)
        return True
    client = getattr(backend, "client", None)
    http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if not _install(getattr(http_session, "_manager", None)):
        return False
    classes = getattr(http_session, "_pool_classes_by_scheme", None)
    if isinstance(classes, dict):
        # botocore gives its proxy managers these classes as they are created.
        http_session._pool_classes_by_scheme = {  # type: ignore[union-attr]
            scheme: _reporting_pool(cls) for scheme, cls in classes.items()
        }
    return True


def _watch_proxies(adapter: Any) -> None:
    """requests creates a proxy's pool manager during the request."""
    original = getattr(adapter, "proxy_manager_for", None)
    if original is None or getattr(original, "_mailrouter_watched", False):
        return

    def proxy_manager_for(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        _install(manager)
        return manager

    proxy_manager_for._mailrouter_watched = True  # type: ignore[attr-defined]
    adapter.proxy_manager_for = proxy_manager_for


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
