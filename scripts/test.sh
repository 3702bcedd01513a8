#!/usr/bin/env bash
# Set up, make sure PostgreSQL, Redis and Chromium are there, then run the whole test suite:
# the inner loop (`-m "not slow"`) on two processes, then the slow tier (service stacks,
# browser, fault injection) in one, since its stacks, ports and databases are per process.
# Extra arguments replace that: they go to one pytest run (e.g. -m "not slow" -n 2 for the
# inner loop only: docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
.venv/bin/ruff check .
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest -ra "$@"
fi
status=0  # both tiers run, so one failure does not hide the other tier's
.venv/bin/python -m pytest -ra -m "not slow" -n 2 || status=$?
.venv/bin/python -m pytest -ra -m slow || status=$?
exit "$status"
