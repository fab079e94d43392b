"""What PostgreSQL cannot store, against a real PostgreSQL (the suite's
server) in child processes running the outbox as a project would:

- a message holding NUL, NaN or a lone surrogate is refused at enqueue with a
  ``PayloadError`` naming the field, and the caller's transaction goes on;
- a mailer's answer holding a NUL (a 503's reason phrase from the fake ESP
  through Anymail, an SMTP server's refusal text on the accepted path) is
  recorded: the 503 ends retried and the accepted message ``sent``, never stuck
  in ``sending`` and then ``uncertain``;
- the system check warns when the outbox's database runs without durable
  commits (``mailrouter.W110``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import django
import pytest

from mailrouter.testing import FakeESPServer, FaultySMTPServer

from .postgres_fixtures import PostgresServer
from .processes import ROOT, child_env


class Project:
    """``tests.outbox_process_settings`` on a fresh database of ``postgres``,
    with a real SMTP server and a fake ESP."""

    def __init__(self, postgres: PostgresServer, name: str) -> None:
        postgres.create_database(name)
        self.dsn = postgres.dsn(name)
        self.smtp = FaultySMTPServer().start()
        self.esp = FakeESPServer().start()
        config = {"database": name, "pg_port": postgres.port, "smtp_port": self.smtp.port,
                  "esp_url": self.esp.mailgun_api_url}
        self.env = child_env(MAILROUTER_OUTBOX_TEST=json.dumps(config))
        self.env["DJANGO_SETTINGS_MODULE"] = "tests.outbox_process_settings"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
            timeout=120, check=False,
        )

    def scenario(self, name: str) -> Any:
        result = self.run("-m", "tests.outbox_storage_child", name)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.splitlines()[-1])

    def rows(self) -> dict[str, dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.dsn, row_factory=dict_row) as conn:
            found = conn.execute(
                "SELECT subject, status, delivery_count, last_error, attempts, sent_using "
                "FROM mailrouter_outbox_outboxmessage"
            )
            return {row["subject"]: row for row in found}

    def close(self) -> None:
        self.smtp.stop()
        self.esp.stop()


@pytest.fixture
def project(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Project]:
    made = Project(postgres, f"unstorable_{request.node.name.lower()[:40]}")
    yield made
    made.close()


def test_unstorable_values_are_payload_errors_and_the_transaction_goes_on(
    project: Project,
) -> None:
    result = project.scenario("enqueue")
    refused = result["refused"]
    fields = {
        "nul_body": "body contains a NUL character",
        "nul_header": "headers['X-Tag'] contains a NUL character",
        "nan_metadata": "metadata['score'] is nan",
        "surrogate_subject": "subject contains a lone surrogate",
    }
    for name, text in fields.items():
        assert refused[name]["type"] == "PayloadError", refused[name]
        assert refused[name]["mailrouter_error"] and refused[name]["value_error"]
        assert text in refused[name]["text"], refused[name]["text"]
        assert "nothing of this batch was stored" in refused[name]["text"]
    # Django's own error for a caller's mistake, as a direct send raises it.
    assert refused["newline_subject"]["value_error"]
    assert not refused["newline_subject"]["payload_error"]
    assert refused["pin_to_outbox"]["payload_error"]
    if django.VERSION >= (6, 1):
        assert "names 'default', which is an outbox" in refused["pin_to_outbox"]["text"]
    assert refused["outbox_ids"] == [None] * len(refused["outbox_ids"])
    assert result["subjects"] == ["first", "last"]


def test_a_nul_in_a_mailers_answer_is_recorded_and_the_row_ends_as_it_should(
    project: Project,
) -> None:
    project.esp.mode = "error_503"  # type: ignore[assignment]
    project.esp.error_reason = "Service\x00Unavailable"
    project.smtp.reject_recipients = ["refused@*"]
    project.smtp.reject_text = "5.1.1 no such\x00user"
    project.scenario("deliver")
    rows = project.rows()
    esp_row, smtp_row = rows["to the ESP"], rows["to SMTP"]
    # A 503 is retryable: queued again, not left in "sending" to end uncertain.
    assert (esp_row["status"], esp_row["delivery_count"]) == ("queued", 1)
    assert "Service\\x00Unavailable" in esp_row["last_error"]
    assert "\\x00" in esp_row["attempts"][0]["error"]
    # Accepted for one recipient, refused for the other with a NUL in the note.
    assert (smtp_row["status"], smtp_row["sent_using"]) == ("sent", "smtp")
    assert "no such\\x00user" in smtp_row["attempts"][0]["error"]
    assert [m.rcpt_tos for m in project.smtp.messages] == [("user@example.com",)]


def check_output(postgres: PostgresServer, name: str, *args: str) -> str:
    made = Project(postgres, name)
    try:
        result = made.run("-m", "django", "check", *args)
    finally:
        made.close()
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_the_check_warns_when_the_outbox_database_is_not_durable(
    postgres: PostgresServer, durable_postgres: PostgresServer
) -> None:
    fast = check_output(postgres, "check_fast", "--database", "default")
    assert "mailrouter.W110" in fast
    assert "synchronous_commit=off, fsync=off" in fast
    assert "mailrouter.W110" not in check_output(durable_postgres, "check_durable",
                                                 "--database", "default")
    # Without --database, checks do not connect: nothing to say.
    assert "mailrouter.W110" not in check_output(postgres, "check_plain")


def test_the_check_stays_quiet_when_the_database_is_unreachable(
    postgres: PostgresServer,
) -> None:
    made = Project(postgres, "check_unreachable")
    try:
        config = json.loads(made.env["MAILROUTER_OUTBOX_TEST"])
        from mailrouter.testing.redis import free_port

        made.env["MAILROUTER_OUTBOX_TEST"] = json.dumps({**config, "pg_port": free_port()})
        result = made.run("-m", "django", "check", "--database", "default")
    finally:
        made.close()
    assert result.returncode == 0, result.stderr
    assert "mailrouter.W110" not in result.stdout + result.stderr
