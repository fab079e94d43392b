#!/usr/bin/env bash
# Build the documentation site into docs/_build/html, warnings as errors, offline.
#
#   bash scripts/docs.sh             # creates .venv-docs on first use
#   DOCS_PYTHON=/path/to/python bash scripts/docs.sh   # use an environment that has .[docs]
#
# scripts/test.sh runs this on its primary matrix entry with that entry's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ -z "${DOCS_PYTHON:-}" ]; then
  if [ ! -x .venv-docs/bin/python ]; then
    UV=$(command -v uv || { [ -x .venv-tools/bin/uv ] && echo .venv-tools/bin/uv; } || true)
    if [ -n "$UV" ]; then
      UV_PYTHON_DOWNLOADS=never "$UV" venv -q -p python3 .venv-docs
      VIRTUAL_ENV=.venv-docs "$UV" pip install -q -e ".[docs]"
    else
      python3 -m venv .venv-docs
      .venv-docs/bin/python -m pip install -q -e ".[docs]"
    fi
  fi
  DOCS_PYTHON=.venv-docs/bin/python
fi

rm -rf docs/_build/html docs/_build/doctrees
# -W: warnings are errors; -n: nitpicky (every cross-reference resolves);
# --keep-going: report every warning, not just the first.
"$DOCS_PYTHON" -m sphinx -b html -W --keep-going -n -q -d docs/_build/doctrees docs docs/_build/html
echo "docs: built docs/_build/html"
