"""``python manage.py mailrouter status|explain|drain|undrain|probe|refresh-status``.

Operate the router from a shell: see every mailer's breaker, ask which
mailers a message would use right now and why, take a mailer out of
rotation fleet-wide, and check that a mailer can be reached — all without
sending mail. Nothing printed contains a configured secret: every text goes
through the router's redactor.

Exit codes (for scripts):

- 0: done (status shown, drain stored, probe succeeded, ...);
- 1: the subject failed: ``probe`` could not connect, ``explain`` found no
  mailer for the message, ``refresh-status`` could not read a page;
- 2: usage or configuration error (unknown alias, bad duration, invalid
  settings, no router configured);
- 3: the health state cannot be reached or is not shared: the health cache is
  down (``status`` and ``explain`` still show everything else, health as
  ``unknown``), or ``drain``/``undrain`` with a per-process cache (it would
  only drain this command's own process).

With ``--json``, stdout is JSON in every case; failures carry an ``error``
field. The logic lives in ``mailrouter.operations``; this module only parses
arguments and formats its values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from email.utils import getaddresses
from typing import Any

from django.core.mail import EmailMessage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...config import MailerTable, is_router_spec, load_mailer_table
from ...errors import ConfigurationError
from ...health.monitor import format_time
from ...operations import (
    ConfiguredRouter,
    Explanation,
    OperationRefused,
    configured_routers,
    drain_mailer,
    explain_message,
    mailer_status,
    undrain_mailer,
)
from ...outbox import command as outbox_command
from ...probe import probe_mailer
from ...ratelimit import status_columns
from ...report import elide
from ...status_pages.refresh_status import refresh_status
from ...status_pages.view import status_extender
from ..arguments import EXIT_USAGE, parse_duration

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3

_REFUSAL_CODES = {"usage": EXIT_USAGE, "unreachable": EXIT_UNREACHABLE}


def _pairs(values: Iterable[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or ():
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise CommandError(f"{option} {value!r}: expected KEY=VALUE", returncode=EXIT_USAGE)
        pairs[name] = rest
    return pairs


class Command(BaseCommand):
    help = (
        "Mailer health and routing: status, explain, drain, undrain, probe; "
        "the outbox: outbox-worker, outbox."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

        status = sub.add_parser("status", help="one row per mailer: breaker state, failures, drain")
        status.add_argument("--json", action="store_true", help="machine-readable output")

        explain = sub.add_parser("explain", help="which route and mailers a message would use now")
        explain.add_argument("--to", action="append", default=[], metavar="ADDRESS")
        explain.add_argument("--cc", action="append", default=[], metavar="ADDRESS")
        explain.add_argument("--bcc", action="append", default=[], metavar="ADDRESS")
        explain.add_argument("--from", dest="from_email", default=None, metavar="ADDRESS")
        explain.add_argument("--subject", default="(explain)")
        explain.add_argument("--tag", action="append", default=[], metavar="TAG")
        explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
        explain.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
        explain.add_argument("--mailers", default=None, metavar="A,B",
                             help="pin the message to these aliases (message.mailers)")
        explain.add_argument("--router", default=None, help="router alias (default: Django's)")
        explain.add_argument("--json", action="store_true")

        drain = sub.add_parser("drain", help="take a mailer out of rotation, fleet-wide")
        drain.add_argument("alias")
        drain.add_argument("--for", dest="duration", default=None, metavar="DURATION",
                           help="end the drain automatically after 90s, 15m, 2h, 1d, ...")
        drain.add_argument("--reason", default="", help="shown in status and skip reasons")

        undrain = sub.add_parser("undrain", help="put a drained mailer back into rotation")
        undrain.add_argument("alias")

        probe = sub.add_parser("probe", help="open and close a mailer's connection (no mail)")
        probe.add_argument("alias")
        probe.add_argument("--timeout", default=None, metavar="SECONDS",
                           help="seconds (default: the router's timeout for it)")
        probe.add_argument("--json", action="store_true")
        outbox_command.add_arguments(sub)

        refresh = sub.add_parser(
            "refresh-status", help="fetch mailers' status pages now (for cron / periodic tasks)"
        )
        refresh.add_argument("aliases", nargs="*", metavar="ALIAS",
                             help="mailers whose page to fetch (default: every page)")
        refresh.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] in outbox_command.ACTIONS:
            outbox_command.handle(self, options)
            return
        action = options["action"]
        handler: Callable[[dict[str, Any]], None] = getattr(self, f"_{action.replace('-', '_')}")
        self._wrote = False
        try:
            try:
                self.table = load_mailer_table()
                self.routers = configured_routers()
            except ConfigurationError as error:
                raise CommandError(str(error), returncode=EXIT_USAGE) from None
            if not self.routers:
                raise CommandError(
                    "no mailrouter router is configured (MAILERS entry or EMAIL_BACKEND "
                    "'mailrouter.backend.RouterBackend')",
                    returncode=EXIT_USAGE,
                )
            handler(options)
        except OperationRefused as refused:
            self._fail_json(options, str(refused))
            raise CommandError(str(refused), returncode=_REFUSAL_CODES[refused.kind]) from None
        except CommandError as error:
            self._fail_json(options, str(error))
            raise

    def _fail_json(self, options: dict[str, Any], text: str) -> None:
        """With --json, stdout stays JSON even when the command fails."""
        if options.get("json") and not self._wrote:
            self._emit_json({"error": text})

    def _emit_json(self, data: dict[str, Any]) -> None:
        self._wrote = True
        self.stdout.write(json.dumps(data, indent=2))

    # -- shared helpers -------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for router in self.routers:
            text = router.runtime.redact(text)
        return text

    def _check_alias(self, alias: str, table: MailerTable) -> None:
        if alias not in table:
            known = ", ".join(sorted(table.entries)) or "(none)"
            raise CommandError(
                f"unknown mailer alias {alias!r}; {table.source} defines: {known}",
                returncode=EXIT_USAGE,
            )

    def _router(self, name: str | None) -> ConfiguredRouter:
        if name is not None:
            for router in self.routers:
                if router.name == name:
                    return router
            names = ", ".join(r.name for r in self.routers)
            raise CommandError(f"unknown router {name!r}; routers: {names}", returncode=EXIT_USAGE)
        # The router Django sends through by default, else the first one.
        for preferred in ("default", "MAILROUTER"):
            for router in self.routers:
                if router.name == preferred:
                    return router
        return self.routers[0]

    # -- status -------------------------------------------------------------------------

    def _status(self, options: dict[str, Any]) -> None:
        report = mailer_status(
            self.routers, self._redact,
            extenders=[status_extender(self._redact), status_columns],
        )
        if options["json"]:
            self._emit_json(report.as_dict())
        else:
            self._print_table(list(report.rows))
            self._print_pages(list(report.rows))
            for note in report.notes:
                self.stdout.write(note)
        if report.error is not None:
            raise CommandError(report.error, returncode=EXIT_UNREACHABLE)

    def _print_table(self, rows: list[dict[str, Any]]) -> None:
        headers = ("MAILER", "BACKEND", "STATE", "FAILURES", "SINCE", "DRAINED", "TIMEOUT",
                   "RATE", "LAST ERROR")
        lines = []
        for row in rows:
            state = _state_text(row)
            failures = "-"
            if "consecutive_failures" in row:
                failures = (
                    f"{row['consecutive_failures']} in a row, "
                    f"{row['window_failures']}/{row['window_attempts']} "
                    f"in {row['window_seconds']:g}s"
                )
            drained = "no" if "drained" in row else "-"
            if row.get("drained"):
                until = row.get("drained_until")
                drained = f"until {format_time(until)}" if until else "yes"
                if row.get("drain_reason"):
                    drained += f" ({row['drain_reason']})"
            timeout = "-"
            if "timeout_source" in row:
                seconds = row["timeout"]
                timeout = f"{seconds:g}s" if seconds is not None else "none"
                timeout += f" ({row['timeout_source']})"
            error = _last_error_text(row)
            rate = "-"
            if "rate_limit" in row:
                rate = f"{row['rate_used']}/{row['rate_capacity']} used ({row['rate_limit']})"
            lines.append((row["alias"], row["backend"], state, failures,
                          format_time(row.get("since")), drained, timeout, rate, error))
        widths = [max(len(str(v)) for v in column) for column in zip(headers, *lines, strict=False)]
        for line in (headers, *lines):
            self.stdout.write("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True))
                              .rstrip())

    def _print_pages(self, rows: list[dict[str, Any]]) -> None:
        pages = [(row["alias"], row["status_page"]) for row in rows if row.get("status_page")]
        if not pages:
            return
        self.stdout.write("")
        headers = ("STATUS PAGE", "STATE", "WORST", "FETCHED", "CHECKED", "LAST ERROR", "URL")
        lines = [
            (alias, page["state"], page["worst"] or "-", format_time(page["fetched_at"]),
             format_time(page["checked_at"]), elide(page["last_error"] or "-", 80), page["url"])
            for alias, page in pages
        ]
        widths = [max(len(str(v)) for v in column) for column in zip(headers, *lines, strict=False)]
        for line in (headers, *lines):
            self.stdout.write("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True))
                              .rstrip())

    # -- explain ---------------------------------------------------------------------------

    def _explain(self, options: dict[str, Any]) -> None:
        router = self._router(options["router"])
        recipients = [*options["to"], *options["cc"], *options["bcc"]]
        if not recipients:
            raise CommandError("explain needs at least one --to/--cc/--bcc", returncode=EXIT_USAGE)
        for _, address in getaddresses(recipients):
            if "@" not in address:
                raise CommandError(f"{address!r} is not an email address", returncode=EXIT_USAGE)
        message = EmailMessage(
            subject=options["subject"], body="", from_email=options["from_email"],
            to=options["to"], bcc=options["bcc"], cc=options["cc"],
            headers=_pairs(options["header"], "--header"),
        )
        if options["tag"]:
            message.tags = list(options["tag"])  # type: ignore[attr-defined]
        if options["metadata"]:
            message.metadata = _pairs(options["metadata"], "--metadata")  # type: ignore[attr-defined]
        if options["mailers"]:
            message.mailers = [a.strip() for a in options["mailers"].split(",")]  # type: ignore[attr-defined]
        explanation = explain_message(message, router.runtime, router.alias)
        if options["json"]:
            self._emit_json(explanation.as_dict())
        else:
            self._print_explanation(explanation)
        if explanation.problem is not None:
            raise CommandError("no mailer can take this message", returncode=EXIT_FAILED)
        if explanation.health_error is not None:
            raise CommandError(explanation.health_error, returncode=EXIT_UNREACHABLE)

    def _print_explanation(self, explanation: Explanation) -> None:
        self._wrote = True
        self.stdout.write(f"router: {explanation.router}")
        self.stdout.write(f"route:  {explanation.route or '(none)'}")
        if explanation.problem is not None:
            self.stdout.write(f"problem: {explanation.problem}")
            return
        if explanation.strategy != "failover":
            self.stdout.write(f"strategy: {explanation.strategy}")
        if explanation.draw is not None:
            self.stdout.write(f"first: {explanation.draw.first} ({explanation.draw.reason})")
        self.stdout.write("candidates, in order:")
        for position, candidate in enumerate(explanation.candidates, 1):
            verdict = "try" if candidate.skip is None else f"skip: {candidate.skip}"
            line = f"  {position}. {candidate.alias}  [{candidate.health}]  {verdict}"
            if candidate.note:
                line += f" ({candidate.note})"
            self.stdout.write(line)
        if explanation.all_skipped:
            self.stdout.write(
                "every candidate would be skipped, so the router tries them all in order anyway"
            )
        if explanation.health_error is not None:
            self.stdout.write(f"health unknown: {explanation.health_error}")
        for note in explanation.notes:
            self.stdout.write(note)

    # -- drain / undrain ----------------------------------------------------------------------

    def _drain(self, options: dict[str, Any]) -> None:
        duration = parse_duration("--for", options["duration"]) if options["duration"] else None
        result = drain_mailer(
            options["alias"], self.routers, self._redact,
            seconds=duration, reason=options["reason"],
        )
        assert result.drain is not None
        until = f" until {format_time(result.drain.until)}" if result.drain.until else (
            " until undrained"
        )
        self.stdout.write(f"drained {result.alias}{until}")

    def _undrain(self, options: dict[str, Any]) -> None:
        result = undrain_mailer(options["alias"], self.routers, self._redact)
        self.stdout.write(
            f"undrained {result.alias}" if result.was_drained else f"{result.alias} was not drained"
        )

    # -- probe ------------------------------------------------------------------------------

    def _probe(self, options: dict[str, Any]) -> None:
        alias = options["alias"]
        self._check_alias(alias, self.table)
        if is_router_spec(self.table[alias]):
            raise CommandError(
                f"{alias!r} is a router; probe the mailers it routes to", returncode=EXIT_USAGE
            )
        timeout = _positive_seconds(options["timeout"], "--timeout")
        router = next(
            (r for r in self.routers if alias in r.runtime.aliases), self._router(None)
        )
        probed = probe_mailer(alias, self.table, router.config, self._redact, timeout=timeout)
        result: dict[str, Any] = {"alias": alias, "ok": probed.ok}
        if probed.ok:
            result |= {"proven": probed.proven, "detail": probed.detail}
        else:
            assert probed.outcome is not None
            result |= {
                "outcome": probed.outcome.value,
                "error_type": probed.error_type,
                "error": probed.error,
            }
        result["seconds"] = round(probed.seconds, 3)
        self._emit_probe(result, options["json"])
        if not probed.ok:
            raise CommandError(f"probe of {alias} failed", returncode=EXIT_FAILED)

    def _emit_probe(self, result: dict[str, Any], as_json: bool) -> None:
        # Success and failure texts both go through the redactor again: a
        # detail or error quoting a configured URL must not print its secrets.
        if as_json:
            self._emit_json({k: self._redact(v) if isinstance(v, str) else v
                             for k, v in result.items()})
        elif result["ok"]:
            detail = f"; {result['detail']}" if result["detail"] else ""
            self.stdout.write(self._redact(
                f"{result['alias']}: ok, {result['proven']} (opened and closed in "
                f"{result['seconds'] * 1000:.0f} ms{detail})"
            ))
        else:
            self.stdout.write(self._redact(
                f"{result['alias']}: failed ({result['outcome']}) after "
                f"{result['seconds'] * 1000:.0f} ms: {result['error_type']}: {result['error']}"
            ))


    # -- refresh-status -----------------------------------------------------------------------

    def _refresh_status(self, options: dict[str, Any]) -> None:
        results = refresh_status(self.routers, list(dict.fromkeys(options["aliases"])),
                                 self._redact)
        if options["json"]:
            self._emit_json({"refreshed": results})
        else:
            for row in results:
                detail = row["error"] if row["state"] == "unknown" else row["worst"]
                suffix = f" ({detail})" if detail else ""
                self.stdout.write(f"{row['alias']}: {row['state']}{suffix}")
        if any(row["state"] == "unknown" for row in results):
            raise CommandError("a status page could not be read", returncode=EXIT_FAILED)

#: The widest LAST ERROR cell of ``status``.
ERROR_WIDTH = 120


def _state_text(row: dict[str, Any]) -> str:
    """The breaker state and what happens next: when an open breaker is retried;
    for a half-open one (its cooldown over), whether its probe is due or under way."""
    state = str(row["state"])
    if state == "half_open":
        return f"{state} (probe {'under way' if row.get('probing') else 'due'})"
    if row.get("retry_at"):
        return f"{state} (retry {format_time(row['retry_at'])})"
    return state


def _last_error_text(row: dict[str, Any]) -> str:
    """When, outcome, and the error's start and end (its innermost cause)."""
    error = row.get("last_error")
    if not error:
        return "-"
    if not row.get("last_error_at"):
        return elide(error, ERROR_WIDTH)
    prefix = f"{format_time(row['last_error_at'])} {row['last_error_outcome']}: "
    return prefix + elide(error, ERROR_WIDTH - len(prefix))


def _positive_seconds(text: str | None, option: str) -> float | None:
    """A usage error, not a mailer's failure, when the value makes no sense."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise CommandError(
            f"{option} {text!r}: expected a positive number of seconds", returncode=EXIT_USAGE
        )
    return value
