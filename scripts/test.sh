#!/usr/bin/env bash
# Set up, make sure PostgreSQL, Redis and Chromium are there, then run the whole test suite
# (both tiers; extra arguments go to pytest, e.g. -m "not slow" for the inner loop only:
# docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -ra "$@"
