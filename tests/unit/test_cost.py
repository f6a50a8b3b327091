"""The one α-β-γ cost model against the schedules' own step and byte counts (no MPI)."""

from __future__ import annotations

import math

import pytest

from distnet.allreduce import SCHEDULES, cost
from distnet.allreduce.hierarchical import hierarchical_schedule
from distnet.allreduce.ring import ring_pipelined_schedule
from distnet.allreduce.schedule import lockstep_counts
from distnet.allreduce.tree import tree_pipelined_schedule
from distnet.common.errors import UserError

SIZES = range(1, 10)
ITEMSIZE = 4
N = 2520 * 3  # divisible by every p = 1..9 (and every q), so chunks are exact


def _model(t: cost.Terms) -> tuple[float, float, float]:
    return t.steps + t.intra_steps, t.bytes + t.intra_bytes, t.reduced_bytes


def _cases(p: int) -> list[tuple[str, object, cost.Terms]]:
    nbytes = N * ITEMSIZE
    cases: list[tuple[str, object, cost.Terms]] = [
        (name, SCHEDULES[name](p, N), cost.terms(name, p, nbytes))
        for name in ("naive", "ring", "tree", "recursive_doubling", "rabenseifner")
    ]
    for seg in (N // 9, N // 4, N):  # one segment per chunk, and several
        cases.append((f"ring_pipelined/{seg}", ring_pipelined_schedule(p, N, segment_elems=seg),
                      cost.ring_pipelined(p, nbytes, segment_bytes=seg * ITEMSIZE)))
    for g in (1, 2, 3, 4):
        cases.append((f"hierarchical/{g}",
                      hierarchical_schedule(p, N, node_of=[r // g for r in range(p)]),
                      cost.hierarchical(p, nbytes, ranks_per_node=g)))
    return cases


@pytest.mark.parametrize("p", SIZES)
def test_closed_forms_are_the_schedules_counts(p: int) -> None:
    for name, sched, terms in _cases(p):
        got = lockstep_counts(sched, ITEMSIZE)  # type: ignore[arg-type]
        assert got == pytest.approx(_model(terms), abs=1e-6), f"{name} p={p}"


@pytest.mark.parametrize("p", SIZES)
def test_tree_pipelined_closed_form_is_an_upper_bound_with_exact_steps(p: int) -> None:
    for seg in (N // 15, N // 3, N):  # segments that divide N exactly
        sched = tree_pipelined_schedule(p, N, segment_elems=seg)
        steps, nbytes, reduced = lockstep_counts(sched, ITEMSIZE)
        t = cost.tree_pipelined(p, N * ITEMSIZE, segment_bytes=seg * ITEMSIZE)
        assert steps == t.steps == sched.nsteps
        assert nbytes <= t.bytes + 1e-6 and reduced <= t.reduced_bytes + 1e-6
        if p > 1 and seg < N:  # tight in the middle of the pipeline: not a loose bound
            assert nbytes >= t.bytes * (t.steps - 2 * (p.bit_length() - 1)) / t.steps - 1e-6


@pytest.mark.parametrize("p", [3, 5, 6, 7])
def test_recursive_doubling_on_non_powers_of_two(p: int) -> None:
    # fold, log2 q exchanges, unfold: the ceil(log2 p)-round count auto used to charge was one
    # exchange too many
    q = 1 << (p.bit_length() - 1)
    sched = SCHEDULES["recursive_doubling"](p, N)
    assert sched.nsteps == int(math.log2(q)) + 2
    t = cost.recursive_doubling(p, N)
    assert (t.steps, t.bytes, t.reduced_bytes) == (math.log2(q) + 2, (math.log2(q) + 2) * N,
                                                   (math.log2(q) + 1) * N)


def test_seconds_is_linear_in_alpha_beta_gamma() -> None:
    t = cost.terms("ring", 4, 4096)
    a, b, g = 3e-6, 2e-10, 5e-10
    assert t.seconds(a, b, g) == pytest.approx(6 * a + 6144 * b + 3072 * g)
    assert cost.cost_s("ring", 4, 4096, a, b, g, latency_s=1e-6) == pytest.approx(
        t.seconds(a, b, g) + 6e-6)
    h = cost.cost_s("hierarchical", 8, 4096, a, b, g, ranks_per_node=4,
                    intra_beta_s_per_byte=0.0, intra_latency_s=0.0)
    assert h == pytest.approx(4 * a + 2 * 4096 * g + cost.ring(2, 4096).seconds(a, b, g))


def test_one_rank_costs_nothing_and_unknown_names_list_the_known() -> None:
    for name in cost.COSTS:
        assert cost.cost_s(name, 1, 1 << 20, 1.0, 1.0, 1.0) == 0.0
    with pytest.raises(UserError, match="ring"):
        cost.terms("warp", 4, 10)
