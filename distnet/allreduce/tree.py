"""Tree all-reduces: binomial reduce + broadcast, and a segmented pipelined binary tree.

`tree`: binomial-tree reduce to rank 0 (round k: r with r mod 2^(k+1) = 2^k sends to r − 2^k),
then the same tree backwards as a broadcast. Whole buffers, ⌈log2 p⌉ rounds each way.
Cost (α per message, β per byte, γ per reduced byte, n bytes, p ranks, L = ⌈log2 p⌉):
    2L·α + 2L·nβ + L·nγ

`tree_pipelined`: a binary heap tree (children 2v+1, 2v+2) and the buffer cut into S segments.
Node v sends segment j up at step j + h(v) (h = height of v's subtree), after its children have
sent theirs; the root sends finished segment j down at step j + H and a node at depth d passes it
on one step later. Reduction and broadcast stream through the tree at the same time.
Cost (H = ⌊log2 p⌋, S segments, each node moving at most 3 segments per step):
    (S + 2H − 1)(α + 3(n/S)β) + 2nγ
Both reduce each element at one place in a fixed order and then copy: bitwise identical ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distnet.allreduce.mpi import execute
from distnet.allreduce.ops import SUM
from distnet.allreduce.schedule import Schedule, Step, chunk_bounds, make_step

DEFAULT_SEGMENT_ELEMS = 1 << 18  # 1 MiB of float32: fewer, larger steps, fewer rendezvous


def tree_schedule(p: int, n: int, **_: Any) -> Schedule:
    """Binomial reduce (L steps) then binomial broadcast (L steps), L = ⌈log2 p⌉."""
    levels = (p - 1).bit_length()
    ranks = np.arange(p, dtype=np.int64)

    def step(s: int) -> Step:
        k = s if s < levels else 2 * levels - 1 - s
        if s < levels:
            src = ranks[(ranks & ((2 << k) - 1)) == (1 << k)]
            return make_step(src, src - (1 << k), 0, n, True)
        src = ranks[((ranks & ((2 << k) - 1)) == 0) & (ranks + (1 << k) < p)]
        return make_step(src, src + (1 << k), 0, n, False)

    return Schedule("tree", p, n, 2 * levels, step, None, {"levels": levels})


def tree_pipelined_schedule(p: int, n: int, segment_elems: int = DEFAULT_SEGMENT_ELEMS,
                            **_: Any) -> Schedule:
    """Segmented binary-tree reduce and broadcast, pipelined: S + 2H − 1 steps."""
    nodes = np.arange(1, p, dtype=np.int64)
    parent = (nodes - 1) // 2
    depth = np.floor(np.log2(nodes + 1)).astype(np.int64)
    # The deepest node under v is on its leftmost path: (v+1)·2^h − 1 < p.
    height = np.floor(np.log2(p // (nodes + 1))).astype(np.int64)
    top = (p.bit_length() - 1) if p > 1 else 0  # height of the root = depth of the deepest node
    nseg = max(1, -(-n // max(1, segment_elems)))
    bounds = chunk_bounds(n, nseg)
    nsteps = nseg + 2 * top - 1 if p > 1 else 0

    def step(t: int) -> Step:
        up_seg = t - height
        up = (up_seg >= 0) & (up_seg < nseg)
        down_seg = t - top - depth + 1
        down = (down_seg >= 0) & (down_seg < nseg)
        ju, jd = up_seg[up], down_seg[down]
        return make_step(
            np.concatenate([nodes[up], parent[down]]),
            np.concatenate([parent[up], nodes[down]]),
            np.concatenate([bounds[ju], bounds[jd]]),
            np.concatenate([bounds[ju + 1] - bounds[ju], bounds[jd + 1] - bounds[jd]]),
            np.concatenate([np.ones(ju.size, bool), np.zeros(jd.size, bool)]),
        )

    return Schedule("tree_pipelined", p, n, nsteps, step, None,
                    {"segments": nseg, "height": top})


def tree_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Binomial reduce + broadcast: 2⌈log2 p⌉(α + nβ) + ⌈log2 p⌉nγ."""
    execute(comm, buf, tree_schedule, op)


def tree_pipelined_allreduce(comm: Any, buf: np.ndarray, op: Any = SUM) -> None:
    """Pipelined binary tree: (S + 2H − 1)(α + 3(n/S)β) + 2nγ."""
    execute(comm, buf, tree_pipelined_schedule, op)
