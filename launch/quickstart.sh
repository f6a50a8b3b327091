#!/usr/bin/env bash
# From nothing to a trained model: make .venv, install distnet with its MPI, train on 8 ranks.
#   bash launch/quickstart.sh [train flags...]     e.g. bash launch/quickstart.sh --epochs 3
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
exec bash launch/local.sh -n "${RANKS:-8}" python -m distnet.train "$@"
