"""Every schedule is a correct all-reduce, and moves what its cost formula says (no MPI)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from distnet.allreduce import SCHEDULES
from distnet.allreduce.hierarchical import hierarchical_schedule
from distnet.allreduce.mpi import rank_transfers
from distnet.allreduce.ring import ring_pipelined_schedule
from distnet.allreduce.schedule import Schedule, per_rank_bytes_sent, simulate_sum
from distnet.allreduce.tree import tree_pipelined_schedule
from tests.proc import ROOT

SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9]


def _lengths(p: int) -> list[int]:
    return sorted({0, 1, p - 1, p, p + 1, 7, 13, 100})


def _builders() -> dict[str, object]:
    b: dict[str, object] = dict(SCHEDULES)
    b["tree_pipelined/seg3"] = lambda p, n: tree_pipelined_schedule(p, n, segment_elems=3)
    b["ring_pipelined/seg2"] = lambda p, n: ring_pipelined_schedule(p, n, segment_elems=2)
    for k in (2, 3):
        b[f"hierarchical/{k}"] = lambda p, n, k=k: hierarchical_schedule(
            p, n, node_of=[r // k for r in range(p)])
    b["hierarchical/mixed"] = lambda p, n: hierarchical_schedule(
        p, n, node_of=[(5 * r) % 3 for r in range(p)])
    return b


@pytest.mark.parametrize("name", sorted(_builders()))
def test_schedule_sums_columns(name: str) -> None:
    build = _builders()[name]
    rng = np.random.default_rng(1234)
    for p in SIZES:
        for n in _lengths(p):
            inputs = rng.integers(-1000, 1000, size=(p, n)).astype(np.float64)
            sched = build(p, n)  # type: ignore[operator]
            assert isinstance(sched, Schedule) and (sched.p, sched.n) == (p, n)
            out = simulate_sum(sched, inputs)
            expected = np.broadcast_to(inputs.sum(axis=0), (p, n))
            assert np.array_equal(out, expected), f"{name} p={p} n={n}"


def _ring_transfers(p: int, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    sched = SCHEDULES["ring"](p, n)
    per_rank = np.zeros(p, dtype=np.int64)
    counts = []
    for st in sched.steps():
        per_rank += np.bincount(st.src, minlength=p)
        counts.append(st.count)
    return per_rank, counts


@pytest.mark.parametrize("p", SIZES)
def test_ring_counts_match_formula(p: int) -> None:
    for n in _lengths(p):
        sched = SCHEDULES["ring"](p, n)
        assert sched.nsteps == 2 * (p - 1)
        per_rank, counts = _ring_transfers(p, n)
        assert np.all(per_rank == 2 * (p - 1))  # tinygrad's check: 2(p−1) transfers per rank
        for c in counts:
            assert set(c.tolist()) <= {n // p, -(-n // p)}
        sent = per_rank_bytes_sent(sched, 8)
        # Each rank sends every chunk but one... twice; chunk sizes differ by at most one element.
        lo, hi = 2 * (p - 1) * (n // p) * 8, 2 * (p - 1) * -(-n // p) * 8
        assert np.all((sent >= lo) & (sent <= hi))
        assert int(sent.sum()) == 2 * (p - 1) * n * 8  # 2((p−1)/p)n bytes per rank on average


@pytest.mark.parametrize("p", SIZES)
def test_log_schedules_match_formulas(p: int) -> None:
    n, itemsize = 1000, 4
    q = 1 << (p.bit_length() - 1)
    extra = p - q
    rounds = q.bit_length() - 1
    lead = 1 if extra else 0

    rd = SCHEDULES["recursive_doubling"](p, n)
    assert rd.nsteps == rounds + 2 * lead
    sent = per_rank_bytes_sent(rd, itemsize)
    assert np.all(sent[extra:q] == rounds * n * itemsize)  # core ranks without a folded partner
    assert np.all(sent[:extra] == (rounds + 1) * n * itemsize)  # they also send the result back
    assert np.all(sent[q:] == n * itemsize)

    rab = SCHEDULES["rabenseifner"](p, n)
    assert rab.nsteps == 2 * rounds + 2 * lead
    sent = per_rank_bytes_sent(rab, itemsize)
    # halving + doubling: 2((q−1)/q)n per core rank, up to rounding of uneven chunks
    core = sent[:q] - np.where(np.arange(q) < extra, n * itemsize, 0)
    assert int(core.sum()) == 2 * (q - 1) * n * itemsize
    assert np.all(np.abs(core - 2 * (q - 1) * n * itemsize / q) <= 2 * rounds * itemsize)
    assert np.all(sent[q:] == n * itemsize)

    tr = SCHEDULES["tree"](p, n)
    levels = (p - 1).bit_length()
    assert tr.nsteps == 2 * levels
    total = per_rank_bytes_sent(tr, itemsize)
    # every non-root sends its buffer up once; every non-root receives it down once
    assert int(total.sum()) == 2 * (p - 1) * n * itemsize
    assert all(len(st) <= p // 2 + 1 for st in tr.steps())


def test_reduce_order_is_fixed_per_chunk() -> None:
    # Reductions into the same rank and region in one step are applied in array order: the
    # pipelined tree has both children of a node reduce the same segment in the same step.
    sched = tree_pipelined_schedule(7, 12, segment_elems=4)
    found = False
    for st in sched.steps():
        for d in np.unique(st.dst[st.reduce]):
            rows = np.flatnonzero(st.reduce & (st.dst == d))
            if len(rows) > 1 and len(set(st.offset[rows].tolist())) == 1:
                assert np.all(np.diff(st.src[rows]) > 0)
                found = True
    assert found


@pytest.mark.parametrize("p,n", [(5, 13), (7, 100), (8, 64), (6, 5)])
@pytest.mark.parametrize("name", ["ring", "ring_pipelined/seg2"])
def test_ring_pattern_keys_consistent(name: str, p: int, n: int) -> None:
    sched = _builders()[name](p, n)  # type: ignore[operator]
    by_key: dict[object, list[tuple[int, int, int]]] = {}
    for s in range(sched.nsteps):
        st = sched.step(s)
        triples = sorted(zip(st.src.tolist(), st.dst.tolist(), st.count.tolist(), strict=True))
        key = sched.pattern(s)
        assert by_key.setdefault(key, triples) == triples, f"step {s} key {key}"


def test_ring_builds_for_27648_ranks_quickly() -> None:
    p = 27_648
    t0 = time.perf_counter()
    sched = SCHEDULES["ring"](p, 10 * p + 17)
    assert sched.nsteps == 2 * (p - 1)
    for s in (0, 1, p - 2, p - 1, 2 * p - 3):
        st = sched.step(s)
        assert len(st) == p and np.all(st.dst == (st.src + 1) % p)
    assert len({sched.pattern(s) for s in range(0, 2 * (p - 1), 997)}) > 1
    assert time.perf_counter() - t0 < 30  # generous: only guards against O(p²) blow-ups


def test_rank_transfers_use_scratch_only_where_needed() -> None:
    steps, scratch_elems = rank_transfers(SCHEDULES["ring"](4, 100), rank=1)
    assert len(steps) == 6
    reduce_steps, copy_steps = steps[:3], steps[3:]
    assert all(r.scratch_lo == 0 for st in reduce_steps for r in st.recvs)
    assert all(r.scratch_lo == -1 for st in copy_steps for r in st.recvs)  # straight into buf
    assert scratch_elems == 25
    # recursive doubling sends and receives the whole buffer at once: the copy back from the
    # folded rank lands directly, the exchanges (reductions) go through scratch
    steps, scratch_elems = rank_transfers(SCHEDULES["recursive_doubling"](3, 10), rank=0)
    assert [len(st.sends) for st in steps] == [0, 1, 1]
    assert [r.scratch_lo for st in steps for r in st.recvs] == [0, 0]
    assert scratch_elems == 10


def test_ring_pipelined_is_the_ring_cut_into_segments() -> None:
    # step sS + k moves segment k of what ring step s moves: same transfers, same reductions
    p, n = 4, 1003
    ring, piped = SCHEDULES["ring"](p, n), ring_pipelined_schedule(p, n, segment_elems=100)
    nseg = piped.meta["segments"]
    assert nseg == 3 and piped.nsteps == ring.nsteps * nseg
    for s in range(ring.nsteps):
        whole = ring.step(s)
        parts = [piped.step(s * nseg + k) for k in range(nseg)]
        assert all(np.array_equal(part.src, whole.src) and np.array_equal(part.dst, whole.dst)
                   and np.array_equal(part.reduce, whole.reduce) for part in parts)
        assert np.array_equal(parts[0].offset, whole.offset)
        assert np.array_equal(sum(part.count for part in parts), whole.count)
        for a, b in zip(parts, parts[1:], strict=False):
            assert np.array_equal(a.offset + a.count, b.offset)  # contiguous, in order


def test_importing_schedules_does_not_start_mpi() -> None:
    code = ("import sys, distnet.allreduce, distnet.allreduce.ring, distnet.allreduce.tree;"
            "assert 'mpi4py.MPI' not in sys.modules, 'MPI imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
