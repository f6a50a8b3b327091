"""One rank's view of a Schedule: what it sends and receives in each step (pure, no MPI).

The executor derives this once per (algorithm, p, n, rank, options) and caches it, so the hot
path never looks at the p-wide step arrays again. Zero-length transfers are dropped on both
ends alike (both ends derive them from the same schedule), and steps where the rank does nothing
vanish from its plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distnet.allreduce.schedule import Schedule


@dataclass(frozen=True)
class Recv:
    peer: int
    lo: int
    hi: int
    reduce: bool
    # Where the chunk lands first: -1 straight into the buffer, else this offset in scratch.
    scratch_lo: int


@dataclass(frozen=True)
class RankStep:
    index: int  # the schedule's step number (becomes the message tag)
    sends: tuple[tuple[int, int, int], ...]  # (peer, lo, hi), in schedule order
    recvs: tuple[Recv, ...]  # applied in schedule order: the fixed reduction order


@dataclass(frozen=True)
class RankPlan:
    p: int
    n: int
    rank: int
    steps: tuple[RankStep, ...]
    scratch_elems: int  # the largest scratch any one step needs


def _overlaps(lo: int, hi: int, regions: list[tuple[int, int]]) -> bool:
    return any(lo < b and a < hi for a, b in regions)


def rank_plan(schedule: Schedule, rank: int) -> RankPlan:
    """The steps of `schedule` that involve `rank`, with scratch offsets assigned."""
    steps: list[RankStep] = []
    scratch_elems = 0
    for s in range(schedule.nsteps):
        st = schedule.step(s)
        live = st.count > 0
        send_idx = np.flatnonzero(live & (st.src == rank))
        recv_idx = np.flatnonzero(live & (st.dst == rank))
        if send_idx.size == 0 and recv_idx.size == 0:
            continue
        sends = tuple(
            (int(st.dst[i]), int(st.offset[i]), int(st.offset[i] + st.count[i])) for i in send_idx
        )
        if any(peer == rank for peer, _, _ in sends):
            raise ValueError(f"{schedule.name}: step {s} has rank {rank} sending to itself")
        regions = [(int(st.offset[i]), int(st.offset[i] + st.count[i])) for i in recv_idx]
        sent = [(lo, hi) for _, lo, hi in sends]
        recvs: list[Recv] = []
        used = 0
        for k, i in enumerate(recv_idx):
            lo, hi = regions[k]
            others = regions[:k] + regions[k + 1:]
            # A copy may land in the buffer directly only if nothing else reads or writes that
            # region during the step; a reduction always needs the old value, so it uses scratch.
            direct = not st.reduce[i] and not _overlaps(lo, hi, sent + others)
            recvs.append(Recv(int(st.src[i]), lo, hi, bool(st.reduce[i]), -1 if direct else used))
            if not direct:
                used += hi - lo
        scratch_elems = max(scratch_elems, used)
        steps.append(RankStep(s, sends, tuple(recvs)))
    return RankPlan(schedule.p, schedule.n, rank, tuple(steps), scratch_elems)
