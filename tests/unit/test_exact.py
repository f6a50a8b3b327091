"""The exact engine against the reference (the original exact loop) on a matrix of cases, auto's
engine choice and proof, streaming of steps, the uncompiled path and the engine's own guards."""

import os
import subprocess
import sys

import numpy as np
import pytest

from distnet.allreduce import get_schedule
from distnet.allreduce.schedule import from_steps, make_step
from distnet.common.errors import UserError
from topology import exact
from topology.builders import clos, fat_tree, leaf_spine
from topology.network import fail_links, fail_random
from topology.placement import node_of_ranks, place
from topology.sim import simulate, simulate_allreduce

NETWORKS = {
    "fat-tree k=4": lambda: fat_tree(4),
    "clos 3:1": lambda: clos(2, 2, 4, 2, 2, tor_oversub=3.0),
    "leaf-spine 2:1": lambda: leaf_spine(4, 2, 4, oversub=2.0),
    "fat-tree k=4, 3 failed": lambda: fail_random(fat_tree(4), 3, seed=2),
}
ALGORITHMS = ["ring", "tree", "recursive_doubling", "rabenseifner", "hierarchical", "naive",
              "ring_pipelined", "tree_pipelined"]


def _case(net, algorithm: str, p: int, nbytes: int, placement: str, seed: int = 1):
    hosts = place(net, p, mode=placement, seed=seed)
    opts = {"node_of": node_of_ranks(net, hosts).tolist()} if algorithm == "hierarchical" else {}
    return get_schedule(algorithm)(p, max(1, nbytes // 4), **opts), hosts


def _agree(net, sched, hosts, routing: str, seed: int = 1) -> None:
    ref = simulate(net, sched, hosts, routing=routing, seed=seed, engine="reference")
    new = simulate(net, sched, hosts, routing=routing, seed=seed, engine="exact")
    assert new.engine == "exact" and ref.engine == "reference"
    assert new.time_s == pytest.approx(ref.time_s, rel=1e-9)
    assert new.step_end_s == pytest.approx(ref.step_end_s, rel=1e-9, abs=1e-15)
    assert new.step_start_s == pytest.approx(ref.step_start_s, rel=1e-9, abs=1e-15)
    assert new.link_bytes == pytest.approx(ref.link_bytes, rel=1e-9)


@pytest.mark.parametrize("net_name", list(NETWORKS))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_exact_matches_the_reference(net_name: str, algorithm: str) -> None:
    # 12 ranks (not a power of two), 3 MiB + change (chunks that do not divide evenly):
    # congested enough that steps overlap on shared links under random placement and ECMP
    net = NETWORKS[net_name]()
    p = min(12, net.n_hosts)
    for placement, routing in (("random", "ecmp"), ("scattered", "ideal"), ("packed", "dmodk")):
        sched, hosts = _case(net, algorithm, p, 3 * 2**20 + 40, placement)
        _agree(net, sched, hosts, routing)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_matches_the_reference_on_a_congested_k8_ring(seed: int) -> None:
    # the case the fast engine gets wrong: random placement, ECMP, flows of neighbouring
    # steps overlapping on shared uplinks
    net = fat_tree(8)
    sched, hosts = _case(net, "ring", 64, 8 * 2**20, "random", seed)
    _agree(net, sched, hosts, "ecmp", seed)
    fast = simulate(net, sched, hosts, routing="ecmp", seed=seed, engine="fast")
    assert fast.time_s >= simulate(net, sched, hosts, seed=seed, engine="exact").time_s * 0.99


def test_streaming_in_small_batches_changes_nothing(monkeypatch) -> None:
    # steps loaded a few at a time, old ones dropped: the stop-and-resume path of the kernel
    net = fail_links(fat_tree(4), [(('edge', 0, 0), ('agg', 0, 0))])
    sched, hosts = _case(net, "rabenseifner", 13, 2**20 + 12, "random")
    whole = simulate(net, sched, hosts, engine="exact")
    monkeypatch.setattr(exact, "BATCH_TRANSFERS", 3)
    pieces = simulate(net, sched, hosts, engine="exact")
    assert pieces.time_s == whole.time_s
    assert np.array_equal(pieces.step_end_s, whole.step_end_s)
    ring_sched, ring_hosts = _case(net, "ring", 16, 2**20, "random")
    _agree(net, ring_sched, ring_hosts, "ecmp")


def test_ranks_absent_from_many_steps_and_zero_byte_transfers() -> None:
    steps = [make_step([0], [1], 0, 100, True), make_step([2], [3], 0, 0, False),
             make_step([1, 3], [0, 2], 0, [50, 0], [False, True]),
             make_step([], [], [], [], []), make_step([4], [0], 0, 7, True)]
    sched = from_steps("sparse", 5, 100, steps)
    net = fat_tree(4)
    hosts = np.array([0, 5, 9, 9, 15])  # ranks 2 and 3 share a host
    _agree(net, sched, hosts, "ecmp")


def test_auto_takes_fast_only_where_it_is_proved_exact() -> None:
    net = fat_tree(8)
    packed, hosts = _case(net, "ring", 128, 2**20, "packed")
    res = simulate(net, packed, hosts)
    assert res.engine == "fast" and "proved exact" in res.engine_note
    assert res.time_s == pytest.approx(simulate(net, packed, hosts, engine="exact").time_s,
                                       rel=1e-9)
    rnd, rhosts = _case(net, "ring", 128, 2**20, "random")
    res = simulate(net, rnd, rhosts)
    assert res.engine == "exact" and "not provably exact" in res.engine_note
    # soundness of the proof: wherever auto goes fast, fast equals exact
    chose = set()
    for algorithm in ALGORITHMS:
        for placement in ("packed", "scattered"):
            for routing in ("ecmp", "dmodk"):
                sched, hs = _case(net, algorithm, 32, 2**20 + 4, placement)
                auto = simulate(net, sched, hs, routing=routing)
                chose.add(auto.engine)
                if auto.engine == "fast":
                    ex = simulate(net, sched, hs, routing=routing, engine="exact")
                    assert auto.time_s == pytest.approx(ex.time_s, rel=1e-9)
                    assert auto.step_end_s == pytest.approx(ex.step_end_s, rel=1e-9)
    assert chose == {"fast", "exact"}


def test_simulate_allreduce_is_what_the_cli_and_whatif_use() -> None:
    net = clos(2, 2, 4, 2, 2, tor_oversub=2.0)
    run = simulate_allreduce(net, "hierarchical", 12, 2**20, placement="random", seed=3)
    assert run.node_of is not None and len(run.node_of) == 12
    assert run.nbytes == 2**20 and run.result.time_s > 0
    with pytest.raises(UserError, match="do not fit"):
        simulate_allreduce(net, "ring", 17, 2**20)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1e-6])
def test_engine_guards_itself_against_nonfinite_and_negative_inputs(bad: float) -> None:
    net = fat_tree(4)
    sched, hosts = _case(net, "ring", 8, 2**16, "packed")
    for engine in ("exact", "fast", "reference", "auto"):
        with pytest.raises(UserError, match="finite"):
            simulate(net, sched, hosts, alpha_s=bad, engine=engine)
        with pytest.raises(UserError, match="finite"):
            simulate(net, sched, hosts, gamma_s_per_byte=bad, engine=engine)
    with pytest.raises(UserError, match="latency"):
        simulate(fat_tree(4, link_latency_s=bad), sched, hosts)  # the builder or the engine


def test_huge_exact_runs_are_refused_with_the_cost() -> None:
    net = fat_tree(4)
    sched = get_schedule("ring")(16, 16)
    big = type(sched)(sched.name, 16, 16, 10**8, sched.step_fn, sched.pattern_fn)
    with pytest.raises(UserError, match="min"):
        simulate(net, big, np.arange(16), engine="exact")
    with pytest.raises(UserError, match="GiB"):
        simulate(net, big, np.arange(16), engine="exact", log=True)


def test_the_uncompiled_kernel_gives_the_same_answers() -> None:
    # the pure-Python path (no Numba) is the same code; run it in a child to prove it
    code = (
        "from topology import kernel; assert not kernel.COMPILED\n"
        "from tests.unit.test_exact import _case\n"
        "from topology.builders import clos\n"
        "from topology.sim import simulate\n"
        "net = clos(2, 2, 4, 2, 2, tor_oversub=3.0)\n"
        "s, h = _case(net, 'rabenseifner', 11, 2**20 + 4, 'random')\n"
        "print(repr(simulate(net, s, h, engine='exact').time_s))\n")
    env = dict(os.environ, DISTNET_NO_NUMBA="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    net = clos(2, 2, 4, 2, 2, tor_oversub=3.0)
    s, h = _case(net, "rabenseifner", 11, 2**20 + 4, "random")
    assert float(out.stdout) == simulate(net, s, h, engine="exact").time_s


def _run_exact(net, sched, hosts, log: bool = False):
    cap = net.link_gbps * (1e9 / 8.0)
    return exact.run_exact(net, sched, hosts, "ecmp", 1, 4, 1e-6, 5e-12, cap, log,
                           3 * sched.p * sched.nsteps if log else 0)


def test_ghosts_drain_on_paper_and_come_back_when_joined() -> None:
    # congested ring: most flows enter empty links (ghosts: drain computed at injection), some
    # are joined before their drain (revived: their queued arrival is void) -- same answers
    net = fat_tree(8)
    sched, hosts = _case(net, "ring", 64, 8 * 2**20, "random", 0)
    run = _run_exact(net, sched, hosts)
    assert run.ghosts > 0 and 0 < run.revived < run.ghosts
    ref = simulate(net, sched, hosts, seed=1, engine="reference")
    assert run.time_s == pytest.approx(ref.time_s, rel=1e-9)
    assert run.step_end_s == pytest.approx(ref.step_end_s, rel=1e-9)


def test_no_ghosts_when_logging_so_the_log_is_the_references() -> None:
    # the log records every drain where it happens: the ghost shortcut must not fire
    net = fat_tree(4)
    sched, hosts = _case(net, "ring", 12, 2**20 + 40, "random")
    run = _run_exact(net, sched, hosts, log=True)
    assert run.ghosts == 0 and run.log is not None
    ref = simulate(net, sched, hosts, seed=1, engine="reference", log=True)
    assert ref.log is not None
    assert [e[1:] for e in run.log] == [e[1:] for e in ref.log]
    assert [e[0] for e in run.log] == pytest.approx([e[0] for e in ref.log], rel=1e-9)
    quiet = _run_exact(net, sched, hosts)
    assert quiet.ghosts > 0 and quiet.time_s == pytest.approx(run.time_s, rel=1e-12)
