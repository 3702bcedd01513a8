#!/usr/bin/env bash
# Set up, make sure PostgreSQL, Redis and Chromium are there, then run the whole test suite
# on two processes (pytest-xdist): the inner loop (`-m "not slow"`), then the slow tier
# (service stacks, browser, fault injection) a file per process, so a module's stack stays
# in one process; every stack takes its own ports, databases, queues and servers.
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
.venv/bin/python -m pytest -ra -m slow -n 2 --dist loadfile || status=$?
exit "$status"
