"""The Celery app of the outbox's Celery test: a real worker on a real Redis
broker runs ``mailrouter.outbox.deliver_outbox``."""

import json
import os

import django
from celery import Celery

django.setup()

_broker = json.loads(os.environ["MAILROUTER_OUTBOX_TEST"])["celery_broker"]
app = Celery("outbox_tests", broker=_broker, backend=_broker)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

import mailrouter.outbox.celery  # noqa: E402,F401  (registers the task)
