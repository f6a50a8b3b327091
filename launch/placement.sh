# Sourced by launch/local.sh: where Open MPI puts the ranks on this machine's cores.
#
# placement_flags RANKS CORES [MPIRUN_FLAGS] prints the mpirun flags (one a line, none when
# there is nothing to add). Up to one rank per core Open MPI binds ranks itself (to a core for
# one or two ranks, to a package or NUMA node above that). With more ranks than cores it binds
# none of them: the kernel then moves ranks between
# cores from one moment to the next, and the same all-reduce measures differently from one run to
# the next. So oversubscribed ranks are pinned in blocks, ranks 0..k-1 on the first core, the next
# k on the second (overload-allowed: Open MPI otherwise refuses to bind two ranks to one core).
# Flags that already say where ranks go (--map-by, --bind-to, --rankfile, --cpu-set, --ppr,
# -N/--npernode) win, and so does a mapping or binding policy set in the environment
# (OMPI_MCA_/PRTE_MCA_ rmaps or hwloc policies), so `MPIRUN_FLAGS="--bind-to none"` keeps the
# old, unbound behaviour.
placement_flags() {
    local ranks="$1" cores="$2" user="${3:-}"
    (( ranks > cores )) || return 0
    printf '%s\n' --oversubscribe
    if [[ " $user " =~ [[:space:]](--?(map-by|bind-to|rankfile|cpu-set|ppr|npernode)|-N)([=[:space:]]) ]]; then
        return 0
    fi
    local policy
    for policy in OMPI_MCA_rmaps_base_mapping_policy OMPI_MCA_hwloc_base_binding_policy \
                  PRTE_MCA_rmaps_default_mapping_policy PRTE_MCA_hwloc_default_binding_policy; do
        [[ -n "${!policy:-}" ]] && return 0
    done
    printf '%s\n' --map-by core:oversubscribe --bind-to core:overload-allowed
}
