"""The α-β-γ cost model of every all-reduce (Thakur, Rabenseifner & Gropp, IJHPCA 2005).

One model, used by `auto` (which algorithm for this size), the topology simulator's checks and
`topology.calibrate` (fitting α, β, γ to measurements). An algorithm's cost is a `Terms`: what
its schedule does along the critical path, counted in

- steps: messages in sequence; each costs α (software overhead) + L (path latency). The
  messages of one step run at once, so a step is charged one α however many a rank posts;
- bytes: summed over steps, the bytes through the busiest rank's port in that step (the larger
  of what it sends and what it receives: links are full duplex) — times β;
- reduced_bytes: summed over steps, the bytes the busiest rank reduces in that step — times γ;
- intra_steps, intra_bytes: the same for the steps inside a node (`hierarchical` only), charged
  α + L_in and β_in.

These are exactly the step/byte counts of the schedules when n divides into the chunks
(tests/unit/test_cost.py counts them for every algorithm and p = 1..9); `tree_pipelined` is an
upper bound (its pipeline fill and drain move fewer segments). Time is linear in (α, β, γ), so
`calibrate` fits them by least squares on the terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from distnet.common.errors import UserError


@dataclass(frozen=True)
class Terms:
    """An all-reduce's critical path in counts: the coefficients of α, β and γ."""

    steps: float = 0.0
    bytes: float = 0.0
    reduced_bytes: float = 0.0
    intra_steps: float = 0.0
    intra_bytes: float = 0.0

    def __add__(self, other: Terms) -> Terms:
        return Terms(self.steps + other.steps, self.bytes + other.bytes,
                     self.reduced_bytes + other.reduced_bytes,
                     self.intra_steps + other.intra_steps, self.intra_bytes + other.intra_bytes)

    def inside_node(self) -> Terms:
        """The same traffic, on a node's internal links."""
        return Terms(0.0, 0.0, self.reduced_bytes, self.steps + self.intra_steps,
                     self.bytes + self.intra_bytes)

    def seconds(self, alpha_s: float, beta_s_per_byte: float, gamma_s_per_byte: float,
                latency_s: float = 0.0, intra_beta_s_per_byte: float | None = None,
                intra_latency_s: float = 0.0) -> float:
        """Model time; inside a node β defaults to the network's and latency to 0."""
        beta_in = beta_s_per_byte if intra_beta_s_per_byte is None else intra_beta_s_per_byte
        return (self.steps * (alpha_s + latency_s) + self.bytes * beta_s_per_byte
                + self.reduced_bytes * gamma_s_per_byte
                + self.intra_steps * (alpha_s + intra_latency_s) + self.intra_bytes * beta_in)


NOTHING = Terms()


def _log2_floor(p: int) -> tuple[int, int]:
    """(q, log2 q) with q = 2^⌊log2 p⌋: the power-of-two core of the doubling algorithms."""
    rounds = p.bit_length() - 1
    return 1 << rounds, rounds


def _fold(p: int, n_bytes: float) -> Terms:
    """Folding the p − q extra ranks into the core and sending them the result back: two
    whole-buffer messages, one reduction."""
    q, _ = _log2_floor(p)
    return NOTHING if p == q else Terms(2, 2 * n_bytes, n_bytes)


def naive(p: int, n_bytes: float) -> Terms:
    """2α + 2(p−1)nβ + (p−1)nγ: everyone sends to rank 0 (whose port carries (p−1)n bytes and
    which reduces them one after another), then rank 0 sends the sum to everyone."""
    if p <= 1:
        return NOTHING
    return Terms(2, 2 * (p - 1) * n_bytes, (p - 1) * n_bytes)


def ring(p: int, n_bytes: float) -> Terms:
    """2(p−1)α + 2((p−1)/p)nβ + ((p−1)/p)nγ: reduce-scatter then all-gather of n/p chunks."""
    if p <= 1:
        return NOTHING
    chunk = n_bytes / p
    return Terms(2 * (p - 1), 2 * (p - 1) * chunk, (p - 1) * chunk)


def ring_pipelined(p: int, n_bytes: float, segment_bytes: float = 4 * (1 << 18)) -> Terms:
    """2(p−1)Sα + 2((p−1)/p)nβ + ((p−1)/p)nγ, S = ⌈(n/p)/segment⌉: the ring, every chunk in S
    segments. Segments default to ring.py's 1 MiB of float32."""
    if p <= 1:
        return NOTHING
    segments = max(1, math.ceil(n_bytes / p / segment_bytes))
    plain = ring(p, n_bytes)
    return Terms(plain.steps * segments, plain.bytes, plain.reduced_bytes)


def tree(p: int, n_bytes: float) -> Terms:
    """2⌈log2 p⌉(α + nβ) + ⌈log2 p⌉nγ: binomial-tree reduce to rank 0, then broadcast."""
    if p <= 1:
        return NOTHING
    rounds = (p - 1).bit_length()
    return Terms(2 * rounds, 2 * rounds * n_bytes, rounds * n_bytes)


def tree_pipelined(p: int, n_bytes: float, segment_bytes: float = 4 * (1 << 18)) -> Terms:
    """(S + 2H − 1)(α + m·sβ + c·sγ), s = n/S, H = ⌊log2 p⌋: a segmented binary heap tree in
    which the busiest rank moves m = parent + children segments per step each way and reduces
    c = children of them (m = 3, c = 2 from p = 5 on). An upper bound: the pipeline's fill and
    drain steps move fewer segments. Segments default to tree.py's 1 MiB of float32."""
    if p <= 1:
        return NOTHING
    segments = max(1, math.ceil(n_bytes / segment_bytes))
    seg = n_bytes / segments
    steps = segments + 2 * (p.bit_length() - 1) - 1
    children = min(2, p - 1)
    moved = 3 if p >= 5 else (2 if p >= 3 else 1)
    return Terms(steps, steps * moved * seg, steps * children * seg)


def recursive_doubling(p: int, n_bytes: float) -> Terms:
    """(log2 q + 2e)(α + nβ) + (log2 q + e)nγ, q = 2^⌊log2 p⌋, e = [p ≠ q]: log2 q exchanges
    of the whole buffer with partner r xor 2^k, plus the fold of the p − q extra ranks."""
    if p <= 1:
        return NOTHING
    _, rounds = _log2_floor(p)
    return Terms(rounds, rounds * n_bytes, rounds * n_bytes) + _fold(p, n_bytes)


def rabenseifner(p: int, n_bytes: float) -> Terms:
    """(2 log2 q + 2e)α + (2(q−1)/q + 2e)nβ + ((q−1)/q + e)nγ: recursive-halving reduce-scatter
    then recursive-doubling all-gather over the q core ranks, plus the fold."""
    if p <= 1:
        return NOTHING
    q, rounds = _log2_floor(p)
    share = (q - 1) / q * n_bytes
    return Terms(2 * rounds, 2 * share, share) + _fold(p, n_bytes)


def hierarchical(p: int, n_bytes: float, ranks_per_node: int = 1) -> Terms:
    """tree(g) inside a node + ring(⌈p/g⌉) across the node leaders, g = ranks_per_node:
    2⌈log2 g⌉(α + L_in + nβ_in) + ⌈log2 g⌉nγ + 2(m−1)(α + L) + 2((m−1)/m)nβ + ((m−1)/m)nγ."""
    if p <= 1:
        return NOTHING
    g = max(1, min(ranks_per_node, p))
    return tree(g, n_bytes).inside_node() + ring(math.ceil(p / g), n_bytes)


COSTS: dict[str, Callable[..., Terms]] = {
    "naive": naive,
    "ring": ring,
    "ring_pipelined": ring_pipelined,
    "tree": tree,
    "tree_pipelined": tree_pipelined,
    "recursive_doubling": recursive_doubling,
    "rabenseifner": rabenseifner,
    "hierarchical": hierarchical,
}

_SECONDS_OPTS = ("intra_beta_s_per_byte", "intra_latency_s")


def terms(name: str, p: int, n_bytes: float, **opts: float) -> Terms:
    """The Terms of algorithm `name`; unknown names are a UserError listing the known ones."""
    try:
        fn = COSTS[name]
    except KeyError:
        known = ", ".join(sorted(COSTS))
        raise UserError(f"no cost model for {name!r} (known: {known})") from None
    return fn(p, n_bytes, **opts)


def cost_s(name: str, p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
           gamma_s_per_byte: float, latency_s: float = 0.0, **opts: float) -> float:
    """Seconds for one all-reduce of n_bytes over p ranks with algorithm `name`.

    `opts` are the algorithm's (ranks_per_node, segment_bytes) and, for hierarchical, the
    node's own intra_beta_s_per_byte and intra_latency_s.
    """
    seconds_opts = {k: opts.pop(k) for k in _SECONDS_OPTS if k in opts}
    return terms(name, p, n_bytes, **opts).seconds(
        alpha_s, beta_s_per_byte, gamma_s_per_byte, latency_s, **seconds_opts)
