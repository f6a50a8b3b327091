#!/usr/bin/env bash
# The test command (README): unit tests, the MPI suite at world sizes 1-6, CLI and fault tests.
# Uses .venv when present. Each mpirun inside runs under a hard timeout (tests/proc.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=python3
if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; export PATH="$PWD/.venv/bin:$PATH"; fi
exec "$py" -m pytest -q -m "not slow" "$@"
