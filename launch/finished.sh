# Sourced by the launchers: run "$@" (an mpirun command line) and never report success for a
# run that did not finish. mpirun --with-ft ulfm exits 0 even when every rank was killed, so the
# program touches "$DISTNET_DONE_FILE.started" and ".done" (distnet/common/procgroup.py) and
# status 0 with a start but no finish becomes status 3. On several hosts put TMPDIR on a
# shared file system so the markers of remote ranks are seen here.
run_finished() {
    local folder rc
    folder="$(mktemp -d "${TMPDIR:-/tmp}/dn-job-XXXXXX")"
    export DISTNET_DONE_FILE="$folder/job"
    set +e
    "$@"
    rc=$?
    set -e
    if (( rc == 0 )) && [[ -e "$folder/job.started" && ! -e "$folder/job.done" ]]; then
        echo "distnet: error: the job exited with status 0 but no rank finished the run" \
             "(every rank died); reporting status 3" >&2
        rc=3
    fi
    rm -rf "$folder"
    return "$rc"
}
