"""``when`` matchers: pure predicates over an EmailMessage.

Each matcher is compiled once from settings into an object whose ``__call__``
does no I/O and allocates little, because it runs for every message.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.headerregistry import AddressHeader
from functools import lru_cache
from typing import Any

from django.core.mail import EmailMessage
from django.utils.module_loading import import_string

MessagePredicate = Callable[[EmailMessage], bool]

MATCHER_KEYS = (
    "to_domain",
    "from_domain",
    "from_email",
    "tags",
    "metadata",
    "headers",
    "callable",
)


class MatcherError(ValueError):
    """A ``when`` entry is malformed; the text names the offending key."""


_GLOB_CHARS = frozenset("*?[]!")


def normalise_domain(domain: str) -> str:
    """One spelling per domain: lower case, IDNA (punycode) labels, no trailing dot.

    Django sends ``user@bücher.de`` as ``xn--bcher-kva.de``; comparing the
    ASCII form makes a rule match however the domain is spelt (Unicode or
    punycode, any case), in patterns and in addresses alike.
    """
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        # Not a valid IDNA name: Django could not send to it either; keep it
        # comparable rather than failing the match.
        return domain


def _normalise_pattern_domain(pattern: str) -> str:
    """``normalise_domain`` for a glob: labels with wildcards stay as given."""
    labels = pattern.lower().rstrip(".").split(".")
    return ".".join(
        label if _GLOB_CHARS & set(label) else normalise_domain(label) for label in labels
    )


_ATEXT = r"[\w!#$%&'*+\-/=?^`{|}~]+"
_LOCAL = rf"{_ATEXT}(?:\.{_ATEXT})*"
_DOMAIN = r"[\w\-]+(?:\.[\w\-]+)*"
#: ``local@domain`` or ``Display Name <local@domain>`` with nothing the header
#: parser would read differently (no quotes, comments, groups, literals, odd
#: white space): the common case, answered without the parser, which costs
#: ~200 us per address. Tested against the parser by a property test.
_SIMPLE_ADDRESS = re.compile(
    rf"^[ \t]*(?:[\w!#$%&'*+\-/=?^`{{|}}~. \t]*<({_LOCAL})@({_DOMAIN})>|({_LOCAL})@({_DOMAIN}))"
    r"[ \t]*\Z"
)


@lru_cache(maxsize=4096)  # senders repeat: most messages share a handful
def _parse_address(address: str) -> tuple[str, str]:
    simple = _SIMPLE_ADDRESS.match(address)
    if simple is not None:
        local, domain = simple.group(1, 2) if simple.group(1) else simple.group(3, 4)
        return _normalised(local, domain)
    return _parse_with_header_parser(address)


def _parse_with_header_parser(address: str) -> tuple[str, str]:
    try:
        mailboxes = AddressHeader.value_parser(address).all_mailboxes
    except Exception:  # the stdlib parser raises assorted errors on garbage
        mailboxes = []
    if len(mailboxes) == 1 and mailboxes[0].local_part is not None:
        local, domain = str(mailboxes[0].local_part), str(mailboxes[0].domain or "")
    else:
        # Not one parseable mailbox (Django would refuse to send it): a
        # best-effort reading still routes it somewhere sensible.
        if "<" in address:
            address = address.rpartition("<")[2].partition(">")[0]
        local, _, domain = address.strip().rpartition("@")
    return _normalised(local, domain)


def _normalised(local: str, domain: str) -> tuple[str, str]:
    domain = normalise_domain(domain)
    return (f"{local.lower()}@{domain}" if domain else local.lower()), domain


def parse_address(address: object) -> tuple[str, str]:
    """``(addr_spec, domain)`` of an address as Django sends it, normalised.

    The one place every matcher reads addresses: parsed with the same email
    header parser Django's sending uses (display names, quoting and comments
    such as ``Ann <ann@x.de> (work)`` are handled as Django handles them), the
    domain normalised by :func:`normalise_domain`, everything lower-cased.
    Django 5.2 also accepts ``(name, address)`` tuples.
    """
    if isinstance(address, tuple) and len(address) == 2:
        address = address[1]
    return _parse_address(str(address or ""))


def domain_of(address: object) -> str:
    """The normalised domain of an address such as ``"Ann <ann@Bücher.DE>"``."""
    return parse_address(address)[1]


def addr_spec_of(address: object) -> str:
    """The normalised ``local@domain`` part of a possibly named address."""
    return parse_address(address)[0]


def _string_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise MatcherError(f"{key!r} must be a non-empty list of strings, not {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise MatcherError(f"{key!r} contains {item!r}; expected a non-empty string")
    return list(value)


def _glob_regex(key: str, patterns: Iterable[str], *, allow_at: bool) -> re.Pattern[str]:
    """One compiled regex for a list of case-insensitive glob patterns."""
    parts = []
    for pattern in patterns:
        if any(ch.isspace() for ch in pattern):
            raise MatcherError(f"{key!r} pattern {pattern!r} contains white space")
        if not allow_at and "@" in pattern:
            raise MatcherError(
                f"{key!r} pattern {pattern!r} contains '@'; give only the domain "
                "(use 'from_email' to match whole addresses)"
            )
        if allow_at and "@" not in pattern:
            raise MatcherError(f"{key!r} pattern {pattern!r} is not an address (no '@')")
        if pattern.count("[") != pattern.count("]"):
            raise MatcherError(f"{key!r} pattern {pattern!r} has unbalanced brackets")
        local, at, domain = pattern.rpartition("@")
        parts.append(fnmatch.translate(f"{local.lower()}{at}{_normalise_pattern_domain(domain)}"))
    return re.compile("|".join(f"(?:{part})" for part in parts))


@dataclass(frozen=True, slots=True)
class ToDomain:
    """Matches when ANY recipient (to, cc, bcc) has a matching domain."""

    regex: re.Pattern[str]

    def __call__(self, message: EmailMessage) -> bool:
        match = self.regex.match
        # A plain loop, not any(<generator>): this runs for every message.
        for address in message.recipients():  # noqa: SIM110
            if match(domain_of(address)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class FromDomain:
    regex: re.Pattern[str]

    def __call__(self, message: EmailMessage) -> bool:
        return self.regex.match(domain_of(str(message.from_email or ""))) is not None


@dataclass(frozen=True, slots=True)
class FromEmail:
    regex: re.Pattern[str]

    def __call__(self, message: EmailMessage) -> bool:
        return self.regex.match(addr_spec_of(str(message.from_email or ""))) is not None


@dataclass(frozen=True, slots=True)
class Tags:
    """Matches when the message's Anymail ``tags`` overlap the configured ones."""

    tags: frozenset[str]

    def __call__(self, message: EmailMessage) -> bool:
        tags = getattr(message, "tags", None)
        if not tags:
            return False
        return not self.tags.isdisjoint(tags)


@dataclass(frozen=True, slots=True)
class Metadata:
    """Matches when every configured pair equals the Anymail ``metadata`` value."""

    pairs: tuple[tuple[str, Any], ...]

    def __call__(self, message: EmailMessage) -> bool:
        metadata = getattr(message, "metadata", None)
        if not metadata:
            return False
        missing = object()
        return all(metadata.get(key, missing) == value for key, value in self.pairs)


@dataclass(frozen=True, slots=True)
class Headers:
    """Matches when every configured header has exactly that value.

    Header names compare case-insensitively, as in email itself.
    """

    pairs: tuple[tuple[str, str], ...]

    def __call__(self, message: EmailMessage) -> bool:
        headers = message.extra_headers
        if not headers:
            return False
        lowered = {str(name).lower(): value for name, value in headers.items()}
        return all(lowered.get(name) == value for name, value in self.pairs)


@dataclass(frozen=True, slots=True)
class CallableMatcher:
    function: MessagePredicate
    path: str

    def __call__(self, message: EmailMessage) -> bool:
        return bool(self.function(message))


@dataclass(frozen=True, slots=True)
class When:
    """All configured matchers must match (an empty ``When`` matches everything)."""

    matchers: tuple[MessagePredicate, ...]

    def __call__(self, message: EmailMessage) -> bool:
        # A plain loop, not all(<generator>): this runs for every route tried.
        for matcher in self.matchers:  # noqa: SIM110
            if not matcher(message):
                return False
        return True


def compile_when(when: Any) -> When:
    """Compile a ``when`` mapping from settings; raises MatcherError naming the key."""
    if not isinstance(when, Mapping):
        raise MatcherError(f"'when' must be a dict, not {type(when).__name__}")
    unknown = sorted(set(when) - set(MATCHER_KEYS), key=str)
    if unknown:
        raise MatcherError(
            f"unknown matcher key {unknown[0]!r} in 'when' "
            f"(expected one of: {', '.join(MATCHER_KEYS)})"
        )
    if not when:
        raise MatcherError("'when' is empty; omit it for a catch-all route")
    matchers: list[MessagePredicate] = []
    for key in MATCHER_KEYS:
        if key not in when:
            continue
        value = when[key]
        if key == "to_domain":
            matchers.append(ToDomain(_glob_regex(key, _string_list(key, value), allow_at=False)))
        elif key == "from_domain":
            matchers.append(FromDomain(_glob_regex(key, _string_list(key, value), allow_at=False)))
        elif key == "from_email":
            matchers.append(FromEmail(_glob_regex(key, _string_list(key, value), allow_at=True)))
        elif key == "tags":
            matchers.append(Tags(frozenset(_string_list(key, value))))
        elif key in ("metadata", "headers"):
            if not isinstance(value, Mapping) or not value:
                raise MatcherError(f"{key!r} must be a non-empty dict, not {value!r}")
            if key == "metadata":
                matchers.append(Metadata(tuple((str(k), v) for k, v in value.items())))
            else:
                for name, header_value in value.items():
                    if not isinstance(name, str) or not isinstance(header_value, str):
                        raise MatcherError(
                            f"'headers' maps header names to string values; "
                            f"got {name!r}: {header_value!r}"
                        )
                matchers.append(Headers(tuple((name.lower(), val) for name, val in value.items())))
        elif key == "callable":
            matchers.append(_compile_callable(value))
    return When(tuple(matchers))


def _compile_callable(value: Any) -> CallableMatcher:
    if callable(value):
        path = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
        function = value
    else:
        if not isinstance(value, str) or "." not in value:
            raise MatcherError(
                f"'callable' must be a dotted path to f(message) -> bool, not {value!r}"
            )
        try:
            function = import_string(value)
        except ImportError as error:
            raise MatcherError(f"'callable' {value!r} cannot be imported: {error}") from None
        if not callable(function):
            raise MatcherError(f"'callable' {value!r} is not callable")
        path = value
    _check_takes_one_argument(function, path)
    return CallableMatcher(function, path)


def _check_takes_one_argument(function: Callable[..., Any], path: str) -> None:
    """A matcher that cannot be called with the message would fail every
    message at runtime; say so at startup instead."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind(object())
    except TypeError:
        raise MatcherError(
            f"'callable' {path!r} cannot be called as f(message): its signature is "
            f"{function.__name__ if hasattr(function, '__name__') else path}{signature}"
        ) from None
