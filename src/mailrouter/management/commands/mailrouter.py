"""``python manage.py mailrouter status|explain|drain|undrain|probe``.

Operate the router from a shell: see every mailer's breaker, ask which
mailers a message would use right now and why, take a mailer out of
rotation fleet-wide, and check that a mailer can be reached — all without
sending mail. Nothing printed contains a configured secret: every text goes
through the router's redactor.

Exit codes (for scripts):

- 0: done (status shown, drain stored, probe succeeded, ...);
- 1: the subject failed: ``probe`` could not connect, ``explain`` found no
  mailer for the message;
- 2: usage or configuration error (unknown alias, bad duration, invalid
  settings, no router configured);
- 3: the health state cannot be reached or is not shared: the health cache is
  down, or ``drain``/``undrain`` with a per-process cache (it would only drain
  this command's own process).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

from django.core.mail import EmailMessage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...checks import _routers
from ...config import RouterConfig, is_router_spec, load_mailer_table
from ...errors import ConfigurationError
from ...health.breaker import State
from ...health.monitor import explain_skip, format_time
from ...health.store import HealthStore, MailerHealth, store_for
from ...outbox import command as outbox_command
from ...probe import probe_mailer
from ...routing import select
from ...runtime import RouterRuntime, load_runtime

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` → seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise CommandError(
            f"--for {text!r}: expected a positive duration such as 90s, 15m, 2h or 1d",
            returncode=EXIT_USAGE,
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _pairs(values: Iterable[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or ():
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise CommandError(f"{option} {value!r}: expected KEY=VALUE", returncode=EXIT_USAGE)
        pairs[name] = rest
    return pairs


@dataclass(frozen=True)
class Router:
    """A configured router as the command sees it."""

    alias: str | None
    runtime: RouterRuntime

    @property
    def config(self) -> RouterConfig:
        return self.runtime.config

    @property
    def name(self) -> str:
        return self.alias if self.alias is not None else "MAILROUTER"

    @property
    def store(self) -> HealthStore | None:
        settings = self.config.health_settings
        return store_for(settings) if settings.enabled else None


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
        probe.add_argument("--timeout", type=float, default=None,
                           help="seconds (default: the router's timeout for it)")
        probe.add_argument("--json", action="store_true")
        outbox_command.add_arguments(sub)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] in outbox_command.ACTIONS:
            outbox_command.handle(self, options)
            return
        try:
            self.table = load_mailer_table()
            self.routers = self._load_routers()
        except ConfigurationError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None
        action = options["action"]
        handler: Callable[[dict[str, Any]], None] = getattr(self, f"_{action}")
        handler(options)

    # -- shared helpers -------------------------------------------------------------

    def _load_routers(self) -> list[Router]:
        routers = []
        for alias, options in _routers(self.table):
            if not isinstance(options, dict):
                raise ConfigurationError([f"router {alias!r}: OPTIONS must be a dict"])
            routers.append(Router(alias, load_runtime(alias, options)))
        if not routers:
            raise CommandError(
                "no mailrouter router is configured (MAILERS entry or EMAIL_BACKEND "
                "'mailrouter.backend.RouterBackend')",
                returncode=EXIT_USAGE,
            )
        return routers

    def _redact(self, text: str) -> str:
        for router in self.routers:
            text = router.runtime.redact(text)
        return text

    def _check_alias(self, alias: str) -> None:
        if alias not in self.table:
            known = ", ".join(sorted(self.table.entries)) or "(none)"
            raise CommandError(
                f"unknown mailer alias {alias!r}; {self.table.source} defines: {known}",
                returncode=EXIT_USAGE,
            )

    def _router(self, name: str | None) -> Router:
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

    def _stores(self, routers: Iterable[Router]) -> list[HealthStore]:
        stores: dict[int, HealthStore] = {}
        for router in routers:
            store = router.store
            if store is not None:
                stores[id(store)] = store
        return list(stores.values())

    def _reachable(self, store: HealthStore) -> None:
        try:
            store.check_reachable()
        except Exception as error:
            raise CommandError(
                f"health cache {store.label} is unreachable: "
                f"{type(error).__name__}: {self._redact(str(error))}",
                returncode=EXIT_UNREACHABLE,
            ) from None

    def _per_process_note(self, store: HealthStore) -> str | None:
        if store.kind == "local":
            return (
                f"note: health state is kept in {store.label}, which is per process; "
                "this shows only this command's own process, not your web workers'"
            )
        return None

    # -- status -------------------------------------------------------------------------

    def _status(self, options: dict[str, Any]) -> None:
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        for router in self.routers:
            store = router.store
            aliases = list(router.runtime.aliases)
            health: dict[str, MailerHealth] = {}
            settings = router.config.health_settings
            now = settings.clock()
            if store is not None:
                self._reachable(store)
                note = self._per_process_note(store)
                if note and note not in notes:
                    notes.append(note)
                health = store.read(aliases, settings.policy, now)
            for alias in aliases:
                if any(row["alias"] == alias for row in rows):
                    continue
                rows.append(self._status_row(router, store, alias, health.get(alias), now))
        if options["json"]:
            self.stdout.write(json.dumps({"mailers": rows, "notes": notes}, indent=2))
            return
        self._print_table(rows)
        for note in notes:
            self.stdout.write(note)

    def _status_row(
        self, router: Router, store: HealthStore | None, alias: str,
        health: MailerHealth | None, now: float,
    ) -> dict[str, Any]:
        spec = self.table[alias]
        row: dict[str, Any] = {
            "alias": alias,
            "backend": spec.backend,
            "router": router.name,
            "state": "untracked" if store is None else "closed",
        }
        if store is None or health is None:
            return row
        policy = router.config.health_settings.policy(alias)
        breaker = health.breaker
        state = breaker.effective(now)
        window = health.window(policy, now)
        row.update(
            state=state.value,
            since=breaker.since,
            reason=self._redact(breaker.reason) if breaker.reason else None,
            retry_at=breaker.retry_at if state is not State.CLOSED else None,
            openings=breaker.openings,
            consecutive_failures=health.consecutive,
            window_failures=window.failures,
            window_attempts=window.attempts,
            window_seconds=policy.window,
            last_error=self._redact(health.last_error.text) if health.last_error else None,
            last_error_outcome=health.last_error.outcome if health.last_error else None,
            last_error_at=health.last_error.at if health.last_error else None,
            drained=health.drained(now),
            drained_until=health.drain.until if health.drain and health.drained(now) else None,
            drain_reason=health.drain.reason if health.drain and health.drained(now) else None,
            cache=store.label,
        )
        if state is State.HALF_OPEN:
            row["probing"] = store.probe_holder(alias, breaker.generation)
        return row

    def _print_table(self, rows: list[dict[str, Any]]) -> None:
        headers = ("MAILER", "BACKEND", "STATE", "FAILURES", "SINCE", "DRAINED", "LAST ERROR")
        lines = []
        for row in rows:
            state = row["state"]
            if row.get("retry_at"):
                state += f" (retry {format_time(row['retry_at'])})"
            failures = "-"
            if "consecutive_failures" in row:
                failures = (
                    f"{row['consecutive_failures']} in a row, "
                    f"{row['window_failures']}/{row['window_attempts']} "
                    f"in {row['window_seconds']:g}s"
                )
            drained = "no"
            if row.get("drained"):
                until = row.get("drained_until")
                drained = f"until {format_time(until)}" if until else "yes"
                if row.get("drain_reason"):
                    drained += f" ({row['drain_reason']})"
            error = row.get("last_error") or "-"
            if row.get("last_error_at"):
                error = f"{format_time(row['last_error_at'])} {row['last_error_outcome']}: {error}"
            lines.append((row["alias"], row["backend"], state, failures,
                          format_time(row.get("since")), drained, error[:120]))
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
        selection = select(message, router.config, self.table, None)
        result: dict[str, Any] = {"router": router.name, "route": selection.route}
        if selection.problem is not None:
            result["problem"] = self._redact(selection.problem)
            self._emit_explain(result, options["json"])
            raise CommandError("no mailer can take this message", returncode=EXIT_FAILED)
        store = router.store
        settings = router.config.health_settings
        now = settings.clock()
        aliases = [c.alias for c in selection.candidates]
        health: dict[str, MailerHealth] = {}
        if store is not None:
            self._reachable(store)
            health = store.read(aliases, settings.policy, now)
        candidates = []
        for alias in aliases:
            entry = health.get(alias)
            skip = explain_skip(entry, now, settings.policy(alias)) if entry is not None else None
            state = entry.breaker.effective(now).value if entry is not None else "untracked"
            note = None
            if state == State.HALF_OPEN.value and skip is None:
                note = "cooldown over: the next attempt is the probe (one process in the fleet)"
            candidates.append({"alias": alias, "state": state, "skip": skip, "note": note})
        result["candidates"] = candidates
        result["all_skipped"] = bool(candidates) and all(c["skip"] for c in candidates)
        if store is not None:
            result["notes"] = [n for n in [self._per_process_note(store)] if n]
        self._emit_explain(result, options["json"])

    def _emit_explain(self, result: dict[str, Any], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(f"router: {result['router']}")
        self.stdout.write(f"route:  {result['route'] or '(none)'}")
        if "problem" in result:
            self.stdout.write(f"problem: {result['problem']}")
            return
        self.stdout.write("candidates, in order:")
        for position, candidate in enumerate(result["candidates"], 1):
            verdict = "try" if candidate["skip"] is None else f"skip: {candidate['skip']}"
            line = f"  {position}. {candidate['alias']}  [{candidate['state']}]  {verdict}"
            if candidate["note"]:
                line += f" ({candidate['note']})"
            self.stdout.write(line)
        if result["all_skipped"]:
            self.stdout.write(
                "every candidate would be skipped, so the router tries them all in order anyway"
            )
        for note in result.get("notes", []):
            self.stdout.write(note)

    # -- drain / undrain ----------------------------------------------------------------------

    def _shared_stores(self, verb: str) -> list[HealthStore]:
        stores = self._stores(self.routers)
        if not stores:
            raise CommandError(
                f"cannot {verb}: health tracking is switched off for every router",
                returncode=EXIT_USAGE,
            )
        for store in stores:
            if store.kind == "local":
                raise CommandError(
                    f"cannot {verb}: health state is in {store.label}, which is per process, "
                    "so this would only affect this command. Set the router option "
                    "health['cache'] to a shared cache (Redis).",
                    returncode=EXIT_UNREACHABLE,
                )
            self._reachable(store)
        return stores

    def _drain(self, options: dict[str, Any]) -> None:
        from ...health.store import Drain

        alias = options["alias"]
        self._check_alias(alias)
        duration = parse_duration(options["duration"]) if options["duration"] else None
        # The routers' clock (wall time unless a test injects one), so that the
        # drain ends when the routers think it does.
        now = self._router(None).config.health_settings.clock()
        drain = Drain(now, None if duration is None else now + duration, options["reason"])
        for store in self._shared_stores("drain"):
            store.set_drain(alias, drain)
        until = f" until {format_time(drain.until)}" if drain.until else " until undrained"
        self.stdout.write(f"drained {alias}{until}")

    def _undrain(self, options: dict[str, Any]) -> None:
        alias = options["alias"]
        self._check_alias(alias)
        was = False
        for store in self._shared_stores("undrain"):
            was = store.clear_drain(alias) or was
        self.stdout.write(f"undrained {alias}" if was else f"{alias} was not drained")

    # -- probe ------------------------------------------------------------------------------

    def _probe(self, options: dict[str, Any]) -> None:
        alias = options["alias"]
        self._check_alias(alias)
        if is_router_spec(self.table[alias]):
            raise CommandError(
                f"{alias!r} is a router; probe the mailers it routes to", returncode=EXIT_USAGE
            )
        router = next(
            (r for r in self.routers if alias in r.runtime.aliases), self._router(None)
        )
        probed = probe_mailer(
            alias, self.table, router.config, self._redact, timeout=options["timeout"]
        )
        result: dict[str, Any] = {"alias": alias, "ok": probed.ok}
        if probed.ok:
            result["detail"] = probed.detail
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
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
        elif result["ok"]:
            detail = f"; {result['detail']}" if result["detail"] else ""
            self.stdout.write(
                f"{result['alias']}: ok (opened and closed in {result['seconds'] * 1000:.0f} ms"
                f"{detail})"
            )
        else:
            self.stdout.write(
                f"{result['alias']}: failed ({result['outcome']}) after "
                f"{result['seconds'] * 1000:.0f} ms: {result['error_type']}: {result['error']}"
            )
