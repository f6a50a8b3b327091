# Sourced by launch/local.sh: where Open MPI puts the ranks on this machine's cores.
#
# placement_flags RANKS CORES [MPIRUN_FLAGS] prints the mpirun flags (one a line, none when
# there is nothing to add). Up to one rank per core Open MPI already binds each rank to a core of
# its own. With more ranks than cores it binds none of them: the kernel then moves ranks between
# cores from one moment to the next, and the same all-reduce measures differently from one run to
# the next. So oversubscribed ranks are pinned in blocks, ranks 0..k-1 on the first core, the next
# k on the second (overload-allowed: Open MPI otherwise refuses to bind two ranks to one core).
# Flags that already say where ranks go (--map-by, --bind-to, --rankfile, --cpu-set) win, so
# `MPIRUN_FLAGS="--bind-to none"` keeps the old, unbound behaviour.
placement_flags() {
    local ranks="$1" cores="$2" user="${3:-}"
    (( ranks > cores )) || return 0
    printf '%s\n' --oversubscribe
    if [[ " $user " =~ [[:space:]]--?(map-by|bind-to|rankfile|cpu-set)([=[:space:]]) ]]; then
        return 0
    fi
    printf '%s\n' --map-by core:oversubscribe --bind-to core:overload-allowed
}
