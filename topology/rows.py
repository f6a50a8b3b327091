"""The exact engine's driver's per-step work, compiled: a loaded step's rows of the transfer and
group tables written in one loop.

A step's rows are its pattern's rows (`topology.exact._Pattern`) plus the step's offsets; done
with NumPy that is a dozen array operations per step, each a pass over the step's rows and a few
microseconds of dispatch, for 16,382 steps of 8,192 transfers in an 8,192-rank ring. One compiled
pass writes them all (with Numba; without, the same function runs as plain Python).
"""

from __future__ import annotations

from topology import kernel as K


@K.njit(**K._JIT)
def write_step(T, tn, trows, red, G, gn, grows, M, mn, spill, t_bytes, count, itemsize, pair,
               pair_bytes, s, t0, g0, m0, gbase, ranks, r_last, r_cur):
    """Write step s (first transfer t0, first group g0, first member m0, in global ids) at rows
    tn, gn, mn of T, G, M; add its bytes to its pairs' totals; link each of its groups behind
    its rank's previous group (r_last) and make it the rank's current one if the rank has none
    yet (-3). Returns False, having written nothing, if an element count is negative."""
    m = trows.shape[0]
    for j in range(m):
        if count[j] < 0:
            return False
    size = float(itemsize)
    for j in range(m):
        b = float(count[j]) * size
        t_bytes[tn + j] = b
        # in transfer order, as NumPy's add.at: a pair twice in a step sums in the same order
        pair_bytes[pair[j]] += b
        for c in range(K.T_COLS):
            T[tn + j, c] = trows[j, c]
        T[tn + j, K.T_GS] += g0
        T[tn + j, K.T_GD] += g0
        T[tn + j, K.T_RED] = red[j]
    for g in range(grows.shape[0]):
        row = gn + g
        for c in range(K.G_COLS):
            G[row, c] = grows[g, c]
        G[row, K.G_MPTR] += m0
        G[row, K.G_STEP] = s
        for c in range(K.G_M0, K.G_COLS):
            G[row, c] += t0
        r = ranks[g]
        gid = g0 + g
        if r_last[r] >= 0:
            G[r_last[r] - gbase, K.G_NEXT] = gid
        r_last[r] = gid
        if r_cur[r] == -3:
            r_cur[r] = gid
    for j in range(spill.shape[0]):
        M[mn + j] = spill[j] + t0
    return True
