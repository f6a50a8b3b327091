"""Max-min fairness by progressive filling: hand-checked cases and the bottleneck property."""

import numpy as np
import pytest

from topology.maxmin import link_load, max_min_rates


def csr(
    paths: list[list[int]], fracs: list[list[float]] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ptr = np.zeros(len(paths) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(p) for p in paths])
    link = np.array([l for p in paths for l in p], dtype=np.int64)
    if fracs is None:
        frac = np.ones(link.shape[0])
    else:
        frac = np.array([f for fs in fracs for f in fs], dtype=np.float64)
    return ptr, link, frac


def test_two_flows_share_one_link_equally() -> None:
    rate = max_min_rates(*csr([[0], [0]]), np.array([10.0]))
    assert rate.tolist() == [5.0, 5.0]


def test_classic_two_link_example() -> None:
    # f0 on A, f1 on A and B, f2 on B; A=1, B=2: A is the first bottleneck, f2 takes the rest.
    rate = max_min_rates(*csr([[0], [0, 1], [1]]), np.array([1.0, 2.0]))
    assert rate == pytest.approx([0.5, 0.5, 1.5], rel=1e-12)


def test_fractional_split_weights_the_load() -> None:
    # f0 splits half/half over links 0 and 1, f1 uses link 0: link 0 carries 1.5 x the level.
    rate = max_min_rates(*csr([[0, 1], [0]], [[0.5, 0.5], [1.0]]), np.array([1.0, 1.0]))
    assert rate == pytest.approx([2 / 3, 2 / 3], rel=1e-12)


def test_flow_without_links_is_unconstrained() -> None:
    rate = max_min_rates(*csr([[], [0]]), np.array([3.0]))
    assert rate[0] == np.inf and rate[1] == 3.0


def test_random_instances_are_feasible_and_every_flow_has_a_bottleneck() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        n_links, n_flows = int(rng.integers(1, 12)), int(rng.integers(1, 25))
        paths = [sorted(rng.choice(n_links, int(rng.integers(1, n_links + 1)), replace=False)
                        .tolist()) for _ in range(n_flows)]
        cap = rng.uniform(1.0, 10.0, n_links)
        ptr, link, frac = csr(paths)
        rate = max_min_rates(ptr, link, frac, cap)
        load = link_load(ptr, link, frac, rate, n_links)
        assert np.all(load <= cap * (1 + 1e-9))
        for f, path in enumerate(paths):
            # max-min: some link of f is full and no flow on it gets more than f
            ok = [abs(load[l] - cap[l]) <= 1e-9 * cap[l]
                  and all(rate[g] <= rate[f] * (1 + 1e-9) for g, pg in enumerate(paths) if l in pg)
                  for l in path]
            assert any(ok), (f, path)
