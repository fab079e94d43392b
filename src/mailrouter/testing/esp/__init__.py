"""A fake, fault-injecting HTTP email-service-provider (ESP) API server.

Standard library only.  It speaks the send APIs used by django-anymail's real
Mailgun, Postmark and Amazon SES backends, so those backends can be pointed at
it (see :attr:`FakeESPServer.mailgun_api_url`,
:attr:`FakeESPServer.postmark_api_url` and :attr:`FakeESPServer.ses_endpoint_url`):

* Mailgun (``mailgun``): ``POST /v3/<domain>/messages`` (form-urlencoded, or
  multipart when there are attachments) -> ``200 {"id": "<...@domain>",
  "message": "Queued. Thank you."}``. Credentials: HTTP basic auth, user
  ``api``, password = API key.
* Postmark (``postmark``): ``POST /email`` and ``POST /email/withTemplate/``
  (one JSON message) -> ``200 {"To", "SubmittedAt", "MessageID", "ErrorCode":
  0, "Message": "OK"}``; ``POST /email/batch`` (JSON list) and ``POST
  /email/batchWithTemplates`` (``{"Messages": [...]}``) -> a JSON list of such
  objects. Credentials: ``X-Postmark-Server-Token`` header.
* Amazon SES v2 (``ses``; boto3's ``sesv2`` client, as anymail's Amazon SES
  backend uses it): ``POST /v2/email/outbound-emails`` (JSON, raw MIME message
  in ``Content.Raw.Data``) -> ``200 {"MessageId": "..."}``; errors carry their
  AWS error code in ``__type`` (``TooManyRequestsException``, ...).
  Credentials: the access key id in the SigV4 ``Authorization`` header (the
  signature itself is not checked). Point the client at it with
  ``client_params={"endpoint_url": server.ses_endpoint_url}``.

Layout, as Anymail splits backends from payloads: ``_server`` is the shared
HTTP plumbing and fault modes (``FakeESPServer``, ``ESPFault``); each ESP's
module implements ``_common.ESPFormat`` (paths, credentials, payload parsing,
answer bodies); ``_common`` also holds the ``ReceivedESPMessage`` record.
"""

from ._common import ReceivedESPMessage, ReceivedRequest
from ._server import ESPFault, FakeESPServer

__all__ = ["ESPFault", "FakeESPServer", "ReceivedESPMessage", "ReceivedRequest"]
