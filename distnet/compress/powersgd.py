"""PowerSGD (Vogels, Karimireddy and Jaggi, NeurIPS 2019): rank-r gradients with error feedback.

For every weight matrix M (this rank's gradient plus its residual from the last step), with Q
(m × r) warm-started from the previous step:

    P = M Q          all-reduce P        P̂ = orthonormal basis of P (QR)
    Q = Mᵀ P̂         all-reduce Q        ΣM ≈ P̂ Qᵀ     residual e = M − P̂ P̂ᵀ M (kept for next step)

So an n × m matrix costs r(n + m) numbers on the wire instead of nm. Biases, and matrices too
small for the rank to save at least MIN_RATIO×, travel uncompressed, packed behind the P's in
the first all-reduce (one bucket, no extra latency). Everything computed after a reduction
(P̂, P̂ Qᵀ) is a deterministic function of reduced, hence identical, data: the result is
bitwise identical on every rank. Q starts as a seeded Gaussian, the same on every rank.

With buckets (byte ranges that may cut a matrix) each range compresses the full rows of every
matrix it holds; the partial rows at its edges go uncompressed. For the first `start_step`
steps the plain sum is used (as PyTorch DDP's PowerSGD hook does), without residuals.

Error feedback telescopes: summed over ranks, applied_t = Σ(g_t + e_{t-1}) − Σe_t, so the sum of
applied updates equals the sum of true gradients minus the last (bounded) residuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.compress.base import Chain, Compressor, Tensor

MIN_RATIO = 2.0  # compress a matrix only if r(n + m) is at most nm / MIN_RATIO
MAX_RANK = 1024


@dataclass
class Piece:
    """Rows [row0, row0 + n) of tensor `tensor`, an (n, m) block at grads[lo:lo + n*m]."""

    key: str
    lo: int
    n: int
    m: int
    r: int
    p_off: int  # offset of its P (n × r) in the range's P buffer
    q_off: int  # offset of its Q (m × r) in the range's Q buffer
    q: np.ndarray  # current Q (m, r): warm start of the next step
    err: np.ndarray  # current residual (n, m) of this rank
    m_next: np.ndarray  # M of the step in flight; becomes err at commit


@dataclass
class RangePlan:
    pieces: list[Piece]
    plain: list[tuple[int, int]]  # uncompressed element ranges, in buffer order
    pbuf: np.ndarray  # [P of every piece, then the plain elements]
    qbuf: np.ndarray  # [Q of every piece]

    @property
    def n_plain(self) -> int:
        return sum(b - a for a, b in self.plain)


def _worth_it(n: int, m: int, r: int) -> bool:
    return n > 1 and m > 1 and r * (n + m) * MIN_RATIO <= n * m


class PowerSGD(Compressor):
    name = "powersgd"

    def __init__(self, grads: np.ndarray, tensors: Sequence[Tensor],
                 ranges: Sequence[tuple[int, int]], rank: int = 4, start_step: int = 0,
                 seed: int = 0, **options: Any) -> None:
        super().__init__(grads, tensors, ranges, **options)
        if not 1 <= rank <= MAX_RANK:
            raise UserError(f"--powersgd-rank must be in 1..{MAX_RANK}, got {rank}")
        if start_step < 0:
            raise UserError(f"--powersgd-start-step must be >= 0, got {start_step}")
        self.rank, self.start_step, self.seed = rank, start_step, seed
        self.steps = 0  # committed steps: compression starts once it reaches start_step
        self._in_flight = False
        self.plans = {r: self._plan(*r) for r in self.ranges}

    def _plan(self, lo: int, hi: int) -> RangePlan:
        dtype = self.grads.dtype
        pieces: list[Piece] = []
        plain: list[tuple[int, int]] = []
        p_len = q_len = 0
        for ti, t in enumerate(self.tensors):
            a, b = max(lo, t.lo), min(hi, t.hi)
            if a >= b:
                continue
            if len(t.shape) != 2:
                plain.append((a, b))
                continue
            m = t.shape[1]
            row0, row1 = -(-(a - t.lo) // m), (b - t.lo) // m  # full rows inside [a, b)
            n = row1 - row0
            r = min(self.rank, n, m)
            if n <= 0 or not _worth_it(n, m, r):
                plain.append((a, b))
                continue
            start, stop = t.lo + row0 * m, t.lo + row1 * m
            if a < start:
                plain.append((a, start))
            if stop < b:
                plain.append((stop, b))
            # Q's seed names the tensor and the rows, so every rank draws the same start.
            rng = np.random.default_rng([self.seed, ti, row0])
            q = rng.standard_normal((m, r)).astype(dtype)
            pieces.append(Piece(f"t{ti}r{row0}-{row1}", start, n, m, r, p_len, q_len, q,
                                np.zeros((n, m), dtype), np.zeros((n, m), dtype)))
            p_len += n * r
            q_len += m * r
        plain.sort()
        n_plain = sum(y - x for x, y in plain)
        return RangePlan(pieces, plain, np.zeros(p_len + n_plain, dtype),
                         np.zeros(q_len, dtype))

    @property
    def compressing(self) -> bool:
        return self.steps >= self.start_step

    def start(self, comm: Any, lo: int, hi: int, algorithm: str) -> Any:
        if not self.compressing:
            return super().start(comm, lo, hi, algorithm)
        self._in_flight = True
        plan, g = self.plans[(lo, hi)], self.grads
        pbuf, qbuf = plan.pbuf, plan.qbuf
        p_len = pbuf.shape[0] - plan.n_plain

        def p_view(pc: Piece) -> np.ndarray:
            return pbuf[pc.p_off:pc.p_off + pc.n * pc.r].reshape(pc.n, pc.r)

        def q_view(pc: Piece) -> np.ndarray:
            return qbuf[pc.q_off:pc.q_off + pc.m * pc.r].reshape(pc.m, pc.r)

        def project() -> Any:
            for pc in plan.pieces:
                mat = g[pc.lo:pc.lo + pc.n * pc.m].reshape(pc.n, pc.m)
                np.add(mat, pc.err, out=pc.m_next)  # M = gradient + last residual
                np.matmul(pc.m_next, pc.q, out=p_view(pc))  # (n, m) @ (m, r) -> (n, r)
            at = p_len
            for a, b in plan.plain:
                pbuf[at:at + b - a] = g[a:b]
                at += b - a
            return self.reduce_start(comm, pbuf, algorithm, None)

        def back_project() -> Any:
            at = p_len
            for a, b in plan.plain:
                g[a:b] = pbuf[at:at + b - a]
                at += b - a
            for pc in plan.pieces:
                pv, qv = p_view(pc), q_view(pc)
                pv[...] = np.linalg.qr(pv, mode="reduced")[0]  # P̂: same input, same output
                np.matmul(pc.m_next.T, pv, out=qv)  # (m, n) @ (n, r) -> (m, r)
                # This rank's residual is M minus its *own* decompressed share P̂ (Mᵀ P̂)ᵀ (the
                # paper's local error); the ranks' residuals then add up to what the summed
                # update missed. The gradient view is free scratch: M already holds g.
                mat = g[pc.lo:pc.lo + pc.n * pc.m].reshape(pc.n, pc.m)
                np.matmul(pv, qv.T, out=mat)  # (n, r) @ (r, m) -> (n, m)
                np.subtract(pc.m_next, mat, out=pc.m_next)  # the residual, staged
            return self.reduce_start(comm, qbuf, algorithm, None) if qbuf.size else None

        def decompress() -> None:
            for pc in plan.pieces:
                mat = g[pc.lo:pc.lo + pc.n * pc.m].reshape(pc.n, pc.m)
                np.matmul(p_view(pc), q_view(pc).T, out=mat)  # the summed update P̂ Qᵀ

        return Chain([project, back_project, decompress], self)

    def reductions(self) -> list[list[int]]:
        if not self.compressing:
            return super().reductions()
        # The Q all-reduce of a range waits for its P (and the orthogonalisation between).
        return [[pl.pbuf.nbytes] + ([pl.qbuf.nbytes] if pl.qbuf.size else [])
                for pl in (self.plans[r] for r in self.ranges)]

    # ---- transactions ----
    def commit(self) -> None:
        if self._in_flight:
            for pl in self.plans.values():
                for pc in pl.pieces:
                    pc.err, pc.m_next = pc.m_next, pc.err
                    pc.q[...] = pl.qbuf[pc.q_off:pc.q_off + pc.m * pc.r].reshape(pc.m, pc.r)
        self._in_flight = False
        self.steps += 1

    def abort(self) -> None:
        self._in_flight = False

    # ---- checkpoints ----
    def _pieces(self) -> list[Piece]:
        return [pc for r in self.ranges for pc in self.plans[r].pieces]

    def shared_state(self) -> dict[str, np.ndarray]:
        state = {f"q/{pc.key}": pc.q for pc in self._pieces()}
        state["steps"] = np.array(self.steps, dtype=np.int64)
        return state

    def local_state(self) -> dict[str, np.ndarray]:
        return {f"err/{pc.key}": pc.err for pc in self._pieces()}

    def load_state(self, shared: dict[str, np.ndarray],
                   local: dict[str, np.ndarray]) -> None:
        want = {**self.shared_state(), **self.local_state()}
        have = {**shared, **local}
        if set(want) != set(have):
            raise UserError("saved PowerSGD state does not fit this run (different rank, "
                            "model or --bucket-mb)")
        for key, arr in want.items():
            if np.shape(have[key]) != arr.shape:
                raise UserError(f"saved PowerSGD state {key} has shape "
                                f"{np.shape(have[key])}, this run needs {arr.shape}")
        self.steps = int(have["steps"])
        for pc in self._pieces():
            pc.q[...] = have[f"q/{pc.key}"]
            pc.err[...] = have[f"err/{pc.key}"]
        self._in_flight = False


def powersgd(grads: np.ndarray, tensors: Sequence[Tensor], ranges: Sequence[tuple[int, int]],
             **options: Any) -> PowerSGD:
    return PowerSGD(grads, tensors, ranges, **options)
