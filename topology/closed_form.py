"""α-β-γ closed forms of the all-reduce algorithms (Thakur, Rabenseifner & Gropp, IJHPCA 2005).

Every message costs α + latency_s + bytes·β, every reduced byte γ: `latency_s` is the path
latency the simulator charges on top of its per-message overhead α (links + switches). Ranks
advance with per-rank dependencies, so a step lasts as long as its slowest message: pass the
WORST path latency of the schedule's messages to compare with `topology.sim` (the simulator
tests do exactly that). All functions take (p, n_bytes, alpha_s, beta_s_per_byte,
gamma_s_per_byte, latency_s) and return seconds; one rank costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from distnet.common.errors import UserError

ClosedForm = Callable[..., float]


def _pow2_below(p: int) -> int:
    return 1 << (p.bit_length() - 1)


def ring(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
         gamma_s_per_byte: float, latency_s: float = 0.0) -> float:
    """2(p−1)(α + L + (n/p)β) + (p−1)(n/p)γ: reduce-scatter then all-gather around the ring."""
    if p <= 1:
        return 0.0
    chunk = n_bytes / p
    return 2 * (p - 1) * (alpha_s + latency_s + chunk * beta_s_per_byte) \
        + (p - 1) * chunk * gamma_s_per_byte


def _fold(p: int, n_bytes: float, alpha_s: float, beta: float, gamma: float,
          latency_s: float) -> float:
    """Extra cost of folding p − 2^⌊log p⌋ ranks into a power of two and back (two messages,
    one reduction of n bytes)."""
    if p == _pow2_below(p):
        return 0.0
    return 2 * (alpha_s + latency_s + n_bytes * beta) + n_bytes * gamma


def recursive_doubling(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
                       gamma_s_per_byte: float, latency_s: float = 0.0) -> float:
    """log p · (α + L + nβ + nγ): exchange the whole buffer with partner r xor 2^i."""
    if p <= 1:
        return 0.0
    q = _pow2_below(p)
    rounds = int(math.log2(q))
    per_round = alpha_s + latency_s + n_bytes * (beta_s_per_byte + gamma_s_per_byte)
    return rounds * per_round + _fold(p, n_bytes, alpha_s, beta_s_per_byte, gamma_s_per_byte,
                                      latency_s)


def rabenseifner(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
                 gamma_s_per_byte: float, latency_s: float = 0.0) -> float:
    """2 log p (α + L) + 2((p−1)/p) nβ + ((p−1)/p) nγ: recursive-halving reduce-scatter, then
    recursive-doubling all-gather."""
    if p <= 1:
        return 0.0
    q = _pow2_below(p)
    rounds = int(math.log2(q))
    share = (q - 1) / q * n_bytes
    return (2 * rounds * (alpha_s + latency_s) + 2 * share * beta_s_per_byte
            + share * gamma_s_per_byte
            + _fold(p, n_bytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, latency_s))


def tree(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
         gamma_s_per_byte: float, latency_s: float = 0.0) -> float:
    """2⌈log p⌉(α + L + nβ) + ⌈log p⌉ nγ: binomial-tree reduce to rank 0, then broadcast."""
    if p <= 1:
        return 0.0
    rounds = math.ceil(math.log2(p))
    return 2 * rounds * (alpha_s + latency_s + n_bytes * beta_s_per_byte) \
        + rounds * n_bytes * gamma_s_per_byte


def tree_pipelined(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
                   gamma_s_per_byte: float, latency_s: float = 0.0,
                   segment_bytes: float = 4 * (1 << 18)) -> float:
    """(S + 2H − 1)(α + L + m·sβ + c·sγ), s = n/S, H = ⌊log p⌋: a segmented binary heap tree in
    which the busiest rank moves m = parent + children segments per step each way and reduces
    c = children of them (m = 3, c = 2 from p = 5 on). An upper bound: the pipeline's fill and
    drain steps move fewer segments. Segments default to tree.py's 1 MiB of float32."""
    if p <= 1:
        return 0.0
    segments = max(1, math.ceil(n_bytes / segment_bytes))
    seg = n_bytes / segments
    height = p.bit_length() - 1
    children = min(2, p - 1)
    moved = 3 if p >= 5 else (2 if p >= 3 else 1)
    per_step = alpha_s + latency_s + seg * (moved * beta_s_per_byte + children * gamma_s_per_byte)
    return (segments + 2 * height - 1) * per_step


def naive(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
          gamma_s_per_byte: float, latency_s: float = 0.0) -> float:
    """2(α + L) + 2(p−1)nβ + (p−1)nγ: everyone sends to rank 0 (whose NIC carries (p−1)n bytes
    and which reduces them one after another), then rank 0 sends the sum to everyone."""
    if p <= 1:
        return 0.0
    return 2 * (alpha_s + latency_s) + 2 * (p - 1) * n_bytes * beta_s_per_byte \
        + (p - 1) * n_bytes * gamma_s_per_byte


def hierarchical(p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
                 gamma_s_per_byte: float, latency_s: float = 0.0,
                 ranks_per_node: int = 1, intra_beta_s_per_byte: float | None = None,
                 intra_latency_s: float = 0.0) -> float:
    """Reduce to a leader per node (binomial tree over g ranks), ring among the p/g leaders,
    broadcast back: 2⌈log g⌉(α + L_in + nβ_in) + ⌈log g⌉nγ + ring(p/g)."""
    if p <= 1:
        return 0.0
    g = max(1, min(ranks_per_node, p))
    leaders = math.ceil(p / g)
    beta_in = beta_s_per_byte if intra_beta_s_per_byte is None else intra_beta_s_per_byte
    intra = tree(g, n_bytes, alpha_s, beta_in, gamma_s_per_byte, intra_latency_s)
    return intra + ring(leaders, n_bytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, latency_s)


CLOSED_FORMS: dict[str, ClosedForm] = {
    "naive": naive,
    "ring": ring,
    "tree": tree,
    "tree_pipelined": tree_pipelined,
    "recursive_doubling": recursive_doubling,
    "rabenseifner": rabenseifner,
    "hierarchical": hierarchical,
}


def closed_form_time(name: str, p: int, n_bytes: float, alpha_s: float, beta_s_per_byte: float,
                     gamma_s_per_byte: float, latency_s: float = 0.0, **opts: float) -> float:
    """Seconds for algorithm `name`; unknown names are a UserError listing the known ones."""
    try:
        fn = CLOSED_FORMS[name]
    except KeyError:
        known = ", ".join(sorted(CLOSED_FORMS))
        raise UserError(f"no closed form for {name!r} (known: {known})") from None
    return float(fn(p, n_bytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, latency_s, **opts))
