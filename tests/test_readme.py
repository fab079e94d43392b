"""The README is the front door: its set-up commands exist, its quickstart passes
the system checks and routes as it says, and its links lead to real pages.
(The examples that used to live here are in docs/ and run by test_docs.py.)"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from .test_docs import (
    applied,
    check_example,
    explain,
    locmem_leaves,
    run,
    secrets_unset,
    settings_of,
)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_two_setup_commands() -> None:
    assert "$ bash scripts/demo.sh" in README and "$ bash scripts/test.sh" in README
    assert (ROOT / "scripts/demo.sh").is_file() and (ROOT / "scripts/test.sh").is_file()


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of every ``$ pip install ...`` line of a page."""
    return [shlex.split(line, comments=True)[2:] for line in re.findall(r"^\$ (pip install .*)$",
                                                                       text, re.M)]


def test_install_commands_install_from_a_checkout() -> None:
    """Nothing is published yet: every install names a path (the clone, or a wheel built
    from it) with extras the package defines, never a bare name from an index."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(pyproject["optional-dependencies"])
    version = re.search(r'__version__ = "(.+)"',
                        (ROOT / "src/mailrouter/__init__.py").read_text())[1]  # type: ignore[index]
    install = (ROOT / "docs/start/install.md").read_text()
    commands = pip_installs(README) + pip_installs(install)
    assert len(commands) >= 4
    for arguments in commands:
        [target] = [a for a in arguments if not a.startswith("-")]
        where, _, wanted = target.partition("[")
        assert where.startswith(("./", "/", "dist/")), target
        assert set(wanted.rstrip("]").split(",")) <= extras | {""}, target
        if where.endswith(".whl"):
            assert where == f"dist/django_mailrouter-{version}-py3-none-any.whl", target
    assert "[anymail] @ file:///" in install


def test_quickstart_routes_as_it_says() -> None:
    [quickstart] = PYTHON_BLOCKS
    configured = check_example(quickstart)
    with applied(configured):
        assert explain("--to", "kunde@example.de")["route"] == "eu"
        result = explain("--to", "ann@example.com")
        assert result["route"] == "default"
        assert [c["alias"] for c in result["candidates"]] == ["mailgun", "smtp"]
    table = settings_of(run(quickstart))["MAILERS"]
    with applied({"MAILERS": locmem_leaves(table)}):
        from django.core.mail import EmailMessage

        message = EmailMessage("Rechnung", "...", "billing@example.com", ["kunde@example.de"])
        message.send()
        assert message.sent_using == "eu_smtp"  # type: ignore[attr-defined]
        assert [a.alias for a in message.mailrouter_attempts] == ["eu_smtp"]  # type: ignore[attr-defined]


def test_quickstart_passes_check_before_its_secrets_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [quickstart] = PYTHON_BLOCKS
    secrets_unset(quickstart, monkeypatch)
    assert "os.environ[" not in quickstart
    check_example(quickstart)


def test_links_lead_to_real_files() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert len(links) >= 15
    for link in links:
        assert (ROOT / link).exists(), link
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")
             if "_build" not in p.parts}
    # Every page of the site is reachable from the front door.
    assert pages <= set(links) | {"docs/index.md"}
