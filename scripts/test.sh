#!/usr/bin/env bash
# Run the whole test suite on every supported Django/Python pair, plus ruff, mypy and
# the documentation build (warnings as errors).
#
#   bash scripts/test.sh            # full matrix
#   bash scripts/test.sh 61         # one entry (61, 60, 52, 61py313); extra args go to pytest
#
# Needs only python3 (3.11+), pip, and Python 3.12 and 3.13 somewhere (PATH or
# pyenv) for Django 6.x; a missing 3.13 skips that one extra entry with a notice. Creates .venv-test/<entry> with uv; installs redis-server through
# apt when it is missing and we are root (the health tests use a real Redis), and
# postgresql likewise (the outbox tests start their own PostgreSQL servers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export UV_PYTHON_DOWNLOADS=never PIP_DISABLE_PIP_VERSION_CHECK=1

find_python() {  # find_python 3.12 -> path of an interpreter of that version
  local version=$1 candidate
  for candidate in "$(command -v "python$version" || true)" \
      "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/"$version"*/bin/python"$version" \
      /usr/bin/python"$version" /usr/local/bin/python"$version"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$version'.split('.')))" 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python $version not found (needed for this Django version)" >&2
  return 1
}

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then UV=$(command -v uv); return; fi
  if [ ! -x .venv-tools/bin/uv ]; then
    # --target needs no venv module and works on "externally managed" system Pythons.
    python3 -m pip install -q --target .venv-tools uv
  fi
  UV=$ROOT/.venv-tools/bin/uv
}

ensure_apt() {  # ensure_apt COMMAND PACKAGE: install PACKAGE through apt when COMMAND is missing
  local command=$1 package=$2
  if command -v "$command" >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing $package (apt)"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "warning: $command is not installed; the tests that need it will fail" >&2
  fi
}

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1; then return; fi
  ensure_apt redis-server redis-server
  # The package starts a system service; the tests start their own servers.
  (service redis-server stop || true) >/dev/null 2>&1
}

ensure_postgres() {
  # Debian keeps initdb off PATH, under /usr/lib/postgresql/<version>/bin.
  if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    return
  fi
  ensure_apt initdb postgresql
  # The package starts a system cluster; the outbox tests start their own servers.
  (service postgresql stop || true) >/dev/null 2>&1
}

declare -A DJANGO=([61]="django==6.1.*" [60]="django==6.0.*" [52]="django==5.2.*" [61py313]="django==6.1.*")
# Django 5.2 has no django.tasks: the outbox's task path uses the backport there.
declare -A EXTRA=([61]="" [60]="" [52]="django-tasks>=0.12" [61py313]="")
declare -A PYTHON=([61]="3.12" [60]="3.12" [52]="3.11" [61py313]="3.13")
ENTRIES=(61 60 52 61py313)
if [ $# -gt 0 ] && [ -n "${DJANGO[$1]:-}" ]; then ENTRIES=("$1"); shift; fi

ensure_uv
ensure_redis
ensure_apt openssl openssl  # the TLS tests make a throwaway certificate with it
ensure_postgres

total_passed=0 total_failed=0 failed_entries=()
for entry in "${ENTRIES[@]}"; do
  venv=$ROOT/.venv-test/django$entry
  if ! python=$(find_python "${PYTHON[$entry]}"); then
    if [ "$entry" = 61py313 ]; then echo "== skipping Django 6.1 on Python 3.13 (no 3.13 here)"; continue; fi
    exit 1
  fi
  echo "== Django ${DJANGO[$entry]#django==} on Python ${PYTHON[$entry]} ($python)"
  if [ ! -x "$venv/bin/python" ]; then "$UV" venv -q -p "$python" "$venv"; fi
  extras=dev
  if [ "$entry" = 61 ]; then extras=dev,docs; fi  # the docs are built once, on this entry
  VIRTUAL_ENV=$venv "$UV" pip install -q -e ".[$extras]" "${DJANGO[$entry]}" ${EXTRA[$entry]:+"${EXTRA[$entry]}"}
  if [ "$entry" = 61 ]; then
    echo "-- ruff";  "$venv/bin/ruff" check src tests demo benchmarks docs
    echo "-- mypy";  "$venv/bin/mypy" src/mailrouter
    echo "-- docs";  DOCS_PYTHON=$venv/bin/python bash scripts/docs.sh
  fi
  report=$(mktemp)
  set +e
  "$venv/bin/python" -m pytest -q --junit-xml="$report" "$@"
  status=$?
  set -e
  # Counted from the JUnit report, so extra pytest arguments (-qq, -x) cannot hide them.
  read -r passed failed < <("$venv/bin/python" - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    suites = ET.parse(sys.argv[1]).getroot().iter("testsuite")
except (ET.ParseError, OSError):
    print(0, 0)
else:
    tests = failed = skipped = 0
    for s in suites:
        tests += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    print(tests - failed - skipped, failed)
PY
)
  rm -f "$report"
  total_passed=$((total_passed + passed)); total_failed=$((total_failed + failed))
  if [ "$status" -ne 0 ]; then
    failed_entries+=("django$entry")
    # A run that failed without failing tests (collection error, crash) still counts.
    if [ "$failed" -eq 0 ]; then total_failed=$((total_failed + 1)); fi
  fi
done

echo
if [ ${#failed_entries[@]} -gt 0 ]; then
  echo "failing matrix entries: ${failed_entries[*]}"
fi
echo "matrix: $total_passed passed, $total_failed failed"
[ ${#failed_entries[@]} -eq 0 ]
