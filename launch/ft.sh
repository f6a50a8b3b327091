#!/usr/bin/env bash
# Fault-tolerant training runs.
#
#   launch/ft.sh -n 4 [train args...]            ULFM: survivors shrink and continue in-run
#   launch/ft.sh --restart -n 4 [train args...]  restart from the latest checkpoint on failure
#
# ULFM needs `--with-ft ulfm` and TCP only (`--mca btl tcp,self`): over shared memory a dead
# rank can leave the survivors waiting forever. Set TIMEOUT_S to bound the whole run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python}"
mode=ulfm
if [[ "${1:-}" == "--restart" ]]; then mode=restart; shift; fi
n=2
if [[ "${1:-}" == "-n" ]]; then n="$2"; shift 2; fi
if [[ "$mode" == restart ]]; then
    exec "$python" -m distnet.ft.supervise -n "$n" --retries "${RETRIES:-3}" \
        --timeout-s "${TIMEOUT_S:-0}" -- "$@" --ft restart
fi
root=()
if [[ "$(id -u)" == 0 ]]; then root=(--allow-run-as-root); fi
# shellcheck source=launch/finished.sh
source "$here/launch/finished.sh"
rc=0
run_finished timeout --kill-after=5 "${TIMEOUT_S:-86400}" mpirun -n "$n" --oversubscribe \
    "${root[@]}" --with-ft ulfm --mca btl tcp,self -x DISTNET_DONE_FILE \
    "$python" -m distnet.train --ft ulfm "$@" || rc=$?
exit "$rc"
