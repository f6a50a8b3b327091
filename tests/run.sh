#!/usr/bin/env bash
# The test command (README): unit tests, the MPI suite at world sizes 1-6, CLI and fault tests.
# Uses .venv when present. Each mpirun inside runs under a hard timeout (tests/proc.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=python3
[[ -x .venv/bin/python ]] && py=.venv/bin/python
export PATH="$(dirname "$(readlink -f "$py")"):$(pwd)/.venv/bin:$PATH"
exec "$py" -m pytest -q -m "not slow" "$@"
