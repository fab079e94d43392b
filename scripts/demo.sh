#!/usr/bin/env bash
# The django-mailrouter demo, from a fresh checkout, in one command:
#
#   bash scripts/demo.sh            # extra arguments go to demo/run.py (e.g. --verbose)
#
# Needs only python3 (3.11+) and pip (without the venv module, uv makes the venv). Creates .venv-demo on first use,
# installs the package with Django and Anymail (Mailgun, Postmark) into it, then
# runs demo/run.py: local SMTP servers and fake ESP APIs on 127.0.0.1, nothing
# leaves the machine. Exit status is the demo's: 0 when the router behaved as designed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Prefer the newest Python on the machine: Django 6.1 (and its MAILERS setting,
# which the demo then uses) needs 3.12+; with 3.11 pip picks Django 5.2.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  for candidate in python3.13 python3.12 \
      "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/3.1[23]*/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv, ensurepip' 2>/dev/null; then
      PYTHON=$candidate
      break
    fi
  done
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $PYTHON is missing or older than 3.11 (set PYTHON=/path/to/python3.11+)" >&2
  exit 2
fi

VENV=.venv-demo
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # No venv/ensurepip (a bare Debian python3): let uv, installed with pip, do it.
    rm -rf "$VENV"
    "$PYTHON" -m pip install -q --target .venv-tools uv
    .venv-tools/bin/uv venv -q -p "$PYTHON" "$VENV"
  fi
fi
echo "== installing django-mailrouter[anymail] into $VENV"
if [ -x "$VENV/bin/pip" ]; then
  "$VENV/bin/python" -m pip install -q -e ".[anymail]"
else
  .venv-tools/bin/uv pip install -q --python "$VENV/bin/python" -e ".[anymail]"
fi
echo "== running demo/run.py"
echo
exec "$VENV/bin/python" demo/run.py "$@"
