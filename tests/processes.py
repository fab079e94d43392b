"""Child Python processes started by tests (workers, benchmarks, the demo)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child interpreter, with this checkout's ``src``
    and the repository root first on its import path, so the suite passes from
    a plain checkout as well as after ``pip install -e``; and without
    ``DJANGO_SETTINGS_MODULE``: children configure Django themselves."""
    env = {**os.environ, **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env
