#!/usr/bin/env bash
# Set everything up, then run the MNIST 1/2/3 demo (quick preset on a CPU, standard on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/balancer demo --out demo-output "$@"
