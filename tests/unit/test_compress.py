"""Compressors in one process: p simulated ranks reduce through an in-process stand-in.

The stand-in sums the p buffers of one collective in rank order with the buffer's own ufunc
(float16/bfloat16 sums are computed in float32 and rounded once, as in the executor), and hands
every rank the same result, as a real all-reduce does.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from distnet.allreduce.ops import MAX
from distnet.common.errors import UserError
from distnet.compress import COMPRESSORS, Compressor, Tensor, get, register
from distnet.compress.cast import FP16_MAX, fp16_scale


class Group:
    """p ranks' collectives in one process: the k-th start of every rank forms collective k."""

    def __init__(self, p: int, damage: float = 0.0) -> None:
        self.p = p
        # A corrupted message: element 0 of every SUM result grows by damage x the result's
        # total magnitude (what a flipped high exponent bit does).
        self.damage = damage
        self.pending: dict[int, list[tuple[int, np.ndarray, object]]] = {}
        self.count = [0] * p
        self.done: set[int] = set()

    def comm(self, rank: int) -> FakeComm:
        return FakeComm(self, rank)

    def start(self, comm: FakeComm, buf: np.ndarray, algorithm: str, op: object) -> Handle:
        k = self.count[comm.rank]
        self.count[comm.rank] += 1
        group = self.pending.setdefault(k, [])
        group.append((comm.rank, buf, op))
        if len(group) == self.p:
            bufs = [b for _, b in sorted(((r, b) for r, b, _ in group), key=lambda t: t[0])]
            ufunc = np.maximum if op is MAX else np.add
            acc = bufs[0].copy()
            for b in bufs[1:]:
                ufunc(acc, b, out=acc)
            if op is not MAX and acc.size and self.damage:
                with np.errstate(over="ignore"):  # float16 may overflow to inf: still damage
                    acc[0] += self.damage * float(np.abs(acc).sum(dtype=np.float64))
            for b in bufs:
                b[...] = acc
            self.done.add(k)
        return Handle(self, k)


class FakeComm:
    def __init__(self, group: Group, rank: int) -> None:
        self.group, self.rank = group, rank

    def Get_size(self) -> int:
        return self.group.p

    def Get_rank(self) -> int:
        return self.rank


class Handle:
    def __init__(self, group: Group, k: int) -> None:
        self.group, self.k = group, k

    def test(self) -> bool:
        return self.k in self.group.done

    def wait(self) -> None:
        assert self.test(), "a rank waited on a collective the others have not started"


def run_step(comps: list[Compressor], comms: list[FakeComm], algorithm: str = "ring") -> None:
    """Every range of every rank, started in the same order, driven to completion."""
    for lo, hi in comps[0].ranges:
        handles = [c.start(m, lo, hi, algorithm) for c, m in zip(comps, comms, strict=True)]
        for _ in range(16):  # each round lets every rank advance one stage
            if all([h.test() for h in handles]):  # a list: every rank is tested each round
                break
        assert all(h.test() for h in handles), "a reduction never finished"
    for c in comps:
        c.commit()


def make(name: str, p: int, tensors: list[Tensor], ranges: list[tuple[int, int]] | None = None,
         damage: float = 0.0,
         **opts: object) -> tuple[list[Compressor], list[FakeComm], list[np.ndarray]]:
    n = max(t.hi for t in tensors)
    group = Group(p, damage)
    grads = [np.zeros(n, dtype=np.float32) for _ in range(p)]
    ranges = ranges or [(0, n)]
    comps = [get(name)(g, tensors, ranges, starter=group.start, **opts) for g in grads]
    return comps, [group.comm(r) for r in range(p)], grads


MLP = [Tensor(0, (20, 30)), Tensor(600, (30,)), Tensor(630, (30, 6)), Tensor(810, (6,))]


def test_registry_refuses_duplicates_and_lists_known_names() -> None:
    assert {"none", "fp16", "bf16", "powersgd"} <= set(COMPRESSORS)
    with pytest.raises(ValueError, match="already registered"):
        register("fp16", Compressor)
    with pytest.raises(UserError, match="known: bf16, fp16, none, powersgd"):
        get("zip")


@pytest.mark.parametrize("name,dtype,rel", [("fp16", np.float16, 2.0 ** -11),
                                            ("bf16", ml_dtypes.bfloat16, 2.0 ** -8)])
@pytest.mark.parametrize("p", [1, 3, 5])
def test_cast_round_trip_within_precision(name: str, dtype: object, rel: float, p: int) -> None:
    comps, comms, grads = make(name, p, MLP)
    rng = np.random.default_rng(p)
    parts = [rng.standard_normal(g.size).astype(np.float32) * 1e-3 for g in grads]
    for g, part in zip(grads, parts, strict=True):
        g[...] = part
    exact = np.sum(np.array(parts, dtype=np.float64), axis=0)
    run_step(comps, comms)
    bound = sum(np.abs(x).astype(np.float64) for x in parts)
    # One rounding of each input plus one per partial sum: at most p roundings of |x| <= bound.
    assert np.all(np.abs(grads[0] - exact) <= p * rel * bound + 1e-30)
    assert all(np.array_equal(grads[0], g) for g in grads[1:])
    assert comps[0].wire_bytes() < grads[0].nbytes * 0.6


def test_fp16_scale_prevents_overflow_and_lifts_subnormals() -> None:
    p = 8
    comps, comms, grads = make("fp16", p, MLP)
    for r, g in enumerate(grads):
        g[...] = 30000.0 * (1 if r % 2 == 0 else 0.5)  # a p-way sum of 180000 > 65504
    run_step(comps, comms)
    assert np.all(np.isfinite(grads[0]))
    assert np.allclose(grads[0], 30000.0 * 6, rtol=1e-3)
    assert comps[0].last_scale < 1
    comps, comms, grads = make("fp16", 2, MLP)
    for g in grads:
        g[...] = 3e-7  # a float16 subnormal without the scale
    run_step(comps, comms)
    assert np.allclose(grads[0], 6e-7, rtol=2.0 ** -10)
    assert comps[0].last_scale > 1


def test_fp16_scale_is_a_bounded_power_of_two() -> None:
    for peak, p in [(1.0, 1), (1e-3, 8), (3e4, 16), (1e-30, 2)]:
        s = fp16_scale(peak, p)
        assert np.log2(s) == int(np.log2(s))
        assert p * peak * s <= FP16_MAX / 2
    assert fp16_scale(float("inf"), 4) == 1.0 and fp16_scale(0.0, 4) == 1.0


def _low_rank(rng: np.random.Generator, n: int, m: int, r: int) -> np.ndarray:
    return (rng.standard_normal((n, r)) @ rng.standard_normal((r, m))).astype(np.float32)


@pytest.mark.parametrize("p", [1, 3])
def test_powersgd_of_a_rank_r_matrix_is_exact(p: int) -> None:
    tensors = [Tensor(0, (64, 48)), Tensor(64 * 48, (48,))]
    comps, comms, grads = make("powersgd", p, tensors, rank=4, seed=7)
    rng = np.random.default_rng(0)
    parts = [_low_rank(rng, 64, 48, 4) / p for _ in range(p)]
    # Each rank's matrix differs, but their sum has rank <= 4 only if they share a column
    # space: use a common rank-4 basis so the summed gradient is exactly rank 4.
    basis = rng.standard_normal((64, 4)).astype(np.float32)
    parts = [basis @ rng.standard_normal((4, 48)).astype(np.float32) for _ in range(p)]
    bias = [rng.standard_normal(48).astype(np.float32) for _ in range(p)]
    for g, part, b in zip(grads, parts, bias, strict=True):
        g[:64 * 48] = part.ravel()
        g[64 * 48:] = b
    total = np.sum(parts, axis=0)
    run_step(comps, comms)
    got = grads[0][:64 * 48].reshape(64, 48)
    assert np.allclose(got, total, rtol=0, atol=1e-4 * np.abs(total).max())
    assert np.array_equal(grads[0][64 * 48:], np.sum(bias, axis=0, dtype=np.float32)) or p > 1
    assert all(np.array_equal(grads[0], g) for g in grads[1:])
    # The wire carries P (64x4), Q (48x4) and the 48 uncompressed biases.
    assert comps[0].wire_bytes() == 4 * (64 * 4 + 48 * 4 + 48)


def test_powersgd_of_a_full_rank_matrix_is_lossy_without_feedback_but_converges_with_it() -> None:
    p, steps = 3, 300
    tensors = [Tensor(0, (40, 40))]
    comps, comms, grads = make("powersgd", p, tensors, rank=2, seed=1)
    rng = np.random.default_rng(5)
    # A fixed full-rank gradient: rank 2 alone would miss most of it every step (a constant
    # gap); error feedback sends the missed part later, so the relative gap shrinks like 1/t.
    fixed = [rng.standard_normal(1600).astype(np.float32) for _ in range(p)]
    true_sum = np.zeros(1600)
    applied_sum = np.zeros(1600)
    first_gap = None
    for t in range(steps):
        parts = [f + 0.1 * rng.standard_normal(1600).astype(np.float32) for f in fixed]
        for g, part in zip(grads, parts, strict=True):
            g[...] = part
        true_sum += np.sum(parts, axis=0, dtype=np.float64)
        run_step(comps, comms)
        applied_sum += grads[0]
        gap = np.linalg.norm(applied_sum - true_sum) / np.linalg.norm(true_sum)
        if t == 0:
            first_gap = gap
    # Telescoping: the gap is the residual left on the ranks, bounded while the sum grows.
    residual = sum(comps[r].local_state()["err/t0r0-40"].astype(np.float64) for r in range(p))
    assert np.allclose(true_sum - applied_sum, residual.ravel(), atol=1e-2)
    assert first_gap is not None and first_gap > 0.5
    assert gap < 0.05


def test_powersgd_start_step_sends_plain_sums_first() -> None:
    comps, comms, grads = make("powersgd", 2, [Tensor(0, (32, 32))], rank=1, start_step=2)
    rng = np.random.default_rng(2)
    for step in range(3):
        parts = [rng.standard_normal(1024).astype(np.float32) for _ in range(2)]
        for g, part in zip(grads, parts, strict=True):
            g[...] = part
        plain = comps[0].wire_bytes()
        run_step(comps, comms)
        exact = np.array_equal(grads[0], parts[0] + parts[1])
        assert exact == (step < 2)
        assert (plain == 1024 * 4) == (step < 2)


def test_powersgd_with_buckets_cutting_matrices_matches_bitwise_across_ranks() -> None:
    n = max(t.hi for t in MLP)
    ranges = [(700, n), (333, 700), (0, 333)]  # cuts inside rows of both matrices
    comps, comms, grads = make("powersgd", 3, MLP, ranges=ranges, rank=2, seed=3)
    rng = np.random.default_rng(9)
    for _ in range(3):
        for g in grads:
            g[...] = rng.standard_normal(n).astype(np.float32)
        run_step(comps, comms)
        assert all(np.array_equal(grads[0], g) for g in grads[1:])
    covered = np.zeros(n, dtype=int)
    for plan in comps[0].plans.values():  # type: ignore[attr-defined]
        for pc in plan.pieces:
            covered[pc.lo:pc.lo + pc.n * pc.m] += 1
        for a, b in plan.plain:
            covered[a:b] += 1
    assert np.all(covered == 1)


def test_powersgd_state_round_trip_and_abort() -> None:
    comps, comms, grads = make("powersgd", 2, MLP, rank=2, seed=4)
    rng = np.random.default_rng(1)
    for g in grads:
        g[...] = rng.standard_normal(g.size).astype(np.float32)
    run_step(comps, comms)
    shared = {k: v.copy() for k, v in comps[0].shared_state().items()}
    local = {k: v.copy() for k, v in comps[1].local_state().items()}
    # A step that is aborted (fault tolerance redoes it) leaves the state untouched.
    for g in grads:
        g[...] = rng.standard_normal(g.size).astype(np.float32)
    for lo, hi in comps[0].ranges:
        handles = [c.start(m, lo, hi, "ring") for c, m in zip(comps, comms, strict=True)]
        for _ in range(16):
            if all([h.test() for h in handles]):
                break
    for c in comps:
        c.abort()
    assert all(np.array_equal(v, comps[1].local_state()[k]) for k, v in local.items())
    assert all(np.array_equal(v, comps[0].shared_state()[k]) for k, v in shared.items())
    fresh, _, _ = make("powersgd", 2, MLP, rank=2, seed=4)
    fresh[1].load_state(shared, local)
    assert all(np.array_equal(v, fresh[1].local_state()[k]) for k, v in local.items())
    with pytest.raises(UserError, match="does not fit"):
        make("powersgd", 2, MLP, rank=3, seed=4)[0][0].load_state(shared, local)


def test_powersgd_rejects_bad_options() -> None:
    with pytest.raises(UserError, match="--powersgd-rank"):
        make("powersgd", 1, MLP, rank=0)
    with pytest.raises(UserError, match="--powersgd-start-step"):
        make("powersgd", 1, MLP, start_step=-1)


def test_tensors_of_an_mlp_tile_its_buffer() -> None:
    from distnet.compress import tensors_of
    from distnet.nn.model import build_mlp

    model = build_mlp(7, [5, 4], 3, dropout=0.1)
    tensors = tensors_of(model)
    assert [t.shape for t in tensors] == [(7, 5), (5,), (5, 4), (4,), (4, 3), (3,)]
    assert tensors[0].lo == 0 and tensors[-1].hi == model.n_params
    assert all(a.hi == b.lo for a, b in zip(tensors, tensors[1:], strict=False))
    dense = model.layers[0]
    assert np.shares_memory(model.grads[tensors[0].lo:tensors[0].hi], dense.dW)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
@pytest.mark.parametrize("damage", [0.0, 1.0])
def test_wire_checksums_add_up_and_catch_damage(name: str, damage: float) -> None:
    p = 3
    comps, comms, grads = make(name, p, MLP, damage=damage, rank=2)
    rng = np.random.default_rng(11)
    for c in comps:
        c.checksums = True
    for g in grads:
        g[...] = rng.standard_normal(g.size).astype(np.float32)
    run_step(comps, comms)
    local = sum(c.wire_sums[0] for c in comps)
    magnitude = sum(c.wire_sums[1] for c in comps)
    reduced = comps[0].wire_sums[2]
    assert all(c.wire_sums[2] == reduced for c in comps)
    assert magnitude > 0
    ok = abs(local - reduced) <= 4 * p * comps[0].wire_eps * magnitude
    assert ok == (damage == 0.0)
