"""Any other Django email backend (locmem, console, file, your own).

Such a backend does not tell how far it got, so its attempts are judged at
stage ``unknown`` (an unknown error is uncertain: never sent twice), unless
it holds an smtplib connection, whose conversation is watched as for SMTP.
It keeps its timeout in a ``timeout`` attribute, if it has one.
"""

from __future__ import annotations

from typing import Any

from .smtp import SMTPKind


class GenericKind(SMTPKind):
    name = "generic"

    def recognises(self, backend: Any) -> bool:
        return True


GENERIC = GenericKind()
