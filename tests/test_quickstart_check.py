"""A quickstart pasted into a new project's settings.py passes ``manage.py check`` in
a fresh process before any of its secrets is set, and nothing prints a warning (an
ESP Anymail no longer supports warns at every command)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailrouter.compat import HAS_MAILERS

from .processes import ROOT, child_env

PAGES = {"README.md": ROOT / "README.md",
         "django61.md": ROOT / "docs/start/django61.md",
         "django52.md": ROOT / "docs/start/django52.md"}
BASE = '''
SECRET_KEY = "quickstart"
INSTALLED_APPS = ["django.contrib.contenttypes", "mailrouter"]
DATABASES = {}
'''


def quickstart(page: Path) -> str:
    [code] = [block for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
              if re.search(r"^(MAILERS|MAILROUTER) = ", block, re.M)]
    return code


@pytest.mark.parametrize("page", sorted(PAGES))
def test_check_passes_before_the_secrets_are_set(page: str, tmp_path: Path) -> None:
    code = quickstart(PAGES[page])
    if "\nMAILERS = " in f"\n{code}" and not HAS_MAILERS:
        pytest.skip("a MAILERS quickstart needs Django 6.1")  # test_docs runs it converted
    (tmp_path / "quickstart_settings.py").write_text(BASE + code)
    env = child_env()
    env["DJANGO_SETTINGS_MODULE"] = "quickstart_settings"
    env["PYTHONPATH"] += f"{os.pathsep}{tmp_path}"
    for name in re.findall(r'os\.environ(?:\.get\(|\[)"(\w+)"', code):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\w+Warning: ", result.stderr) is None, result.stderr  # Python warnings
