"""Anymail's real ESP backends pointed at a FakeESPServer (see mailrouter.testing.esp)."""

from __future__ import annotations

from typing import Any

from mailrouter.testing import FakeESPServer

from .smtp_fixtures import smtp_mailer

API_KEY = "key-live-0123456789abcdef"


def mailgun(server: FakeESPServer, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "anymail.backends.mailgun.EmailBackend",
        "OPTIONS": {
            "api_key": API_KEY,
            "sender_domain": "mg.example.com",
            "api_url": server.mailgun_api_url,
            "timeout": 2,
            **options,
        },
    }


def postmark(server: FakeESPServer, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "anymail.backends.postmark.EmailBackend",
        "OPTIONS": {
            "server_token": API_KEY,
            "api_url": server.postmark_api_url,
            "timeout": 2,
            **options,
        },
    }


def amazon_ses(server: FakeESPServer, **config: Any) -> dict[str, Any]:
    """Anymail's real Amazon SES backend (boto3 ``sesv2``) against the fake server.
    ``config`` overrides the botocore client config (``None`` drops a key)."""
    client_config = {
        # botocore would retry throttling and timeouts itself (a resent POST
        # after a read timeout is a duplicate): leave that to the router.
        "retries": {"total_max_attempts": 1},
        "read_timeout": 0.5,
        "connect_timeout": 1,
        **config,
    }
    return {
        "BACKEND": "anymail.backends.amazon_ses.EmailBackend",
        "OPTIONS": {
            "client_params": {
                "endpoint_url": server.ses_endpoint_url,
                "region_name": "eu-west-1",
                "aws_access_key_id": API_KEY,
                "aws_secret_access_key": "ses-secret-not-for-logs",
                "config": {k: v for k, v in client_config.items() if v is not None},
            },
        },
    }


def mailgun_then_smtp(configure: Any, primary: FakeESPServer, relay: Any) -> Any:
    """``configure``'s router trying Mailgun on ``primary``, then SMTP on ``relay``."""
    return configure(
        {"mailgun": mailgun(primary), "smtp": smtp_mailer(relay)},
        {"routes": [{"mailers": ["mailgun", "smtp"]}]},
    )
