"""Optimisers against hand-derived updates (2 parameters, 2 steps), state round trips, schedules.

Unless a test says otherwise: p0 = [1, -2], the gradient is g = [0.5, 1] at every step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.nn.optim import SGD, Adadelta, Adam, Optimizer, lr_at, make_optimizer


def run(make: type[Optimizer], grads_per_step: list[list[float]], **kw: Any) -> list[np.ndarray]:
    params = np.array([1.0, -2.0])
    grads = np.zeros(2)
    opt = make(params, grads, **kw)
    history = []
    for g in grads_per_step:
        grads[:] = g
        opt.step()
        history.append(params.copy())
    return history


G = [0.5, 1.0]


def test_sgd_plain() -> None:
    p1, p2 = run(SGD, [G, G], lr=0.1)
    np.testing.assert_allclose(p1, [0.95, -2.1], rtol=1e-15)
    np.testing.assert_allclose(p2, [0.90, -2.2], rtol=1e-15)


def test_sgd_momentum() -> None:
    # v1 = g = [.5, 1]; v2 = .9 v1 + g = [.95, 1.9]; p2 = p1 - .1 v2
    p1, p2 = run(SGD, [G, G], lr=0.1, momentum=0.9)
    np.testing.assert_allclose(p1, [0.95, -2.1], rtol=1e-15)
    np.testing.assert_allclose(p2, [0.855, -2.29], rtol=1e-15)


def test_sgd_nesterov() -> None:
    # step uses g + mu v: [0.95, 1.9] then [0.5 + .9*.95, 1 + .9*1.9] = [1.355, 2.71]
    p1, p2 = run(SGD, [G, G], lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(p1, [0.905, -2.19], rtol=1e-15)
    np.testing.assert_allclose(p2, [0.7695, -2.461], rtol=1e-14)


def test_sgd_weight_decay() -> None:
    # g' = g + .1 p: [0.6, 0.8] -> p1 = [0.94, -2.08]; then [0.594, 0.792] -> p2
    p1, p2 = run(SGD, [G, G], lr=0.1, weight_decay=0.1)
    np.testing.assert_allclose(p1, [0.94, -2.08], rtol=1e-15)
    np.testing.assert_allclose(p2, [0.8806, -2.1592], rtol=1e-14)


def test_sgd_leaves_grads_untouched() -> None:
    params, grads = np.ones(3), np.full(3, 0.5)
    SGD(params, grads, lr=0.1, momentum=0.9, weight_decay=0.1).step()
    np.testing.assert_array_equal(grads, 0.5)


def test_adam_bias_correction() -> None:
    # Step 1 with bias correction moves every coordinate by lr * sign(g) (up to eps).
    # Step 2 with g2 = [-0.5, 2]:
    #   m2 = .9 * .1 g1 + .1 g2 = [-0.005, 0.29],  m_hat = m2 / (1 - .9^2) = m2 / .19
    #   v2 = .999 * .001 g1^2 + .001 g2^2 = [0.00049975, 0.004999],  v_hat = v2 / .001999
    p1, p2 = run(Adam, [G, [-0.5, 2.0]], lr=0.1)
    np.testing.assert_allclose(p1, [0.9, -2.1], rtol=1e-7)
    expected = p1 - 0.1 * (np.array([-0.005, 0.29]) / 0.19) / np.sqrt(
        np.array([0.00049975, 0.004999]) / 0.001999)
    np.testing.assert_allclose(p2, expected, rtol=1e-7)
    assert p2[0] == pytest.approx(0.9 + 0.1 / 19, rel=1e-7)


def test_adam_weight_decay_adds_to_gradient() -> None:
    # g' = g + 1.0 p = [1.5, -1]: the decay flips the second coordinate's direction
    (p1,) = run(Adam, [G], lr=0.1, weight_decay=1.0)
    np.testing.assert_allclose(p1, [0.9, -1.9], rtol=1e-7)


def test_adadelta() -> None:
    # rho = .9, eps = 1e-6, lr = 1, first coordinate (g = 0.5 twice):
    #   s1 = .025;            d1 = sqrt(1e-6) / sqrt(.025 + 1e-6) * .5;        u1 = .1 d1^2
    #   s2 = .9 s1 + .025;    d2 = sqrt(u1 + 1e-6) / sqrt(s2 + 1e-6) * .5
    p1, p2 = run(Adadelta, [G, G], lr=1.0)
    d1 = math.sqrt(1e-6) / math.sqrt(0.025 + 1e-6) * 0.5
    u1 = 0.1 * d1 * d1
    s2 = 0.9 * 0.025 + 0.025
    d2 = math.sqrt(u1 + 1e-6) / math.sqrt(s2 + 1e-6) * 0.5
    assert p1[0] == pytest.approx(1.0 - d1, rel=1e-12)
    assert p2[0] == pytest.approx(1.0 - d1 - d2, rel=1e-12)
    # second coordinate, g = 1: s1 = 0.1, d1 = sqrt(1e-6 / 0.100001)
    assert p1[1] == pytest.approx(-2.0 - math.sqrt(1e-6 / 0.100001), rel=1e-12)


def test_adadelta_lr_and_weight_decay() -> None:
    (p1,) = run(Adadelta, [G], lr=0.5, weight_decay=0.2)
    g = 0.5 + 0.2 * 1.0  # first coordinate's effective gradient
    assert p1[0] == pytest.approx(1.0 - 0.5 * math.sqrt(1e-6) / math.sqrt(0.1 * g * g + 1e-6) * g)


@pytest.mark.parametrize("name,kw", [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    ("adam", {"lr": 0.01, "weight_decay": 1e-3}),
    ("adadelta", {"lr": 1.0}),
])
def test_state_dict_round_trip_bit_exact(name: str, kw: dict[str, float]) -> None:
    rng = np.random.default_rng(0)
    grads_seq = rng.standard_normal((8, 5)).astype(np.float32)
    p0 = rng.standard_normal(5).astype(np.float32)

    def fresh(params: np.ndarray) -> tuple[Optimizer, np.ndarray, np.ndarray]:
        grads = np.zeros_like(params)
        return make_optimizer(name, params, grads, **kw), params, grads

    opt, params, grads = fresh(p0.copy())
    for g in grads_seq[:4]:
        grads[:] = g
        opt.step()
    saved_state, saved_params = opt.state_dict(), params.copy()
    for g in grads_seq[4:]:
        grads[:] = g
        opt.step()
    opt.lr = 123.0  # state_dict must have copied, not aliased, what it saved
    resumed, params2, grads2 = fresh(saved_params)
    resumed.load_state_dict(saved_state)
    for g in grads_seq[4:]:
        grads2[:] = g
        resumed.step()
    np.testing.assert_array_equal(params2, params)


def test_state_dict_keeps_lr_and_step_count() -> None:
    params, grads = np.zeros(2), np.ones(2)
    opt = Adam(params, grads, lr=0.5)
    opt.step()
    opt.lr = 0.25
    state = opt.state_dict()
    assert state["lr"] == 0.25 and state["t"] == 1
    other = Adam(np.zeros(2), np.ones(2))
    other.load_state_dict(state)
    assert other.lr == 0.25 and other.t == 1
    with pytest.raises(UserError):
        Adam(np.zeros(3), np.ones(3)).load_state_dict(state)


def test_step_allocates_no_new_state() -> None:
    params, grads = np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    for opt in (SGD(params, grads, 0.1, momentum=0.9, nesterov=True),
                Adam(params, grads), Adadelta(params, grads)):
        before = {k: id(v) for k, v in vars(opt).items() if isinstance(v, np.ndarray)}
        opt.step()
        assert {k: id(v) for k, v in vars(opt).items() if isinstance(v, np.ndarray)} == before
        assert params.dtype == np.float32


def test_make_optimizer() -> None:
    params, grads = np.zeros(2), np.zeros(2)
    opt = make_optimizer("SGD", params, grads, lr=0.1, momentum=0.9, weight_decay=0.01)
    assert isinstance(opt, SGD) and opt.momentum == 0.9 and opt.weight_decay == 0.01
    assert isinstance(make_optimizer("adam", params, grads, 0.1, 0.0, 0.0), Adam)
    assert isinstance(make_optimizer("adadelta", params, grads, 1.0, 0.0, 0.0), Adadelta)
    with pytest.raises(UserError, match=r"unknown optimizer 'x' \(known: adadelta, adam, sgd\)"):
        make_optimizer("x", params, grads, 0.1, 0.0, 0.0)
    with pytest.raises(UserError):
        SGD(params, grads, lr=0.1, nesterov=True)


def test_lr_schedules() -> None:
    assert lr_at("constant", 0.1, 7, 10) == 0.1
    assert lr_at("step", 0.1, 9, 30) == pytest.approx(0.1)
    assert lr_at("step", 0.1, 10, 30) == pytest.approx(0.01)
    assert lr_at("step", 1.0, 25, 30, step_size=5, gamma=0.5) == pytest.approx(0.5 ** 5)
    assert lr_at("cosine", 0.2, 0, 10) == pytest.approx(0.2)
    assert lr_at("cosine", 0.2, 5, 10) == pytest.approx(0.1)
    assert lr_at("cosine", 0.2, 10, 10) == pytest.approx(0.0)
    with pytest.raises(UserError, match="known: constant, cosine, step"):
        lr_at("linear", 0.1, 0, 10)
    with pytest.raises(UserError):
        lr_at("cosine", 0.1, 0, 0)
