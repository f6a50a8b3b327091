"""Layers: finite-difference gradient checks in float64, and dropout's contract."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.nn.layers import Dense, Dropout, Layer, ReLU, Sigmoid, Tanh


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of x (edited in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * eps)
    return g


def scalar_loss(layer: Layer, x: np.ndarray, w: np.ndarray) -> float:
    # A fixed random projection of the output, so every output entry matters.
    return float(np.sum(layer.forward(x, True) * w))


def check_input_grad(layer: Layer, x: np.ndarray, seed: int = 0) -> None:
    out = layer.forward(x, True).copy()
    w = np.random.default_rng(seed).standard_normal(out.shape)
    layer.forward(x, True)
    dx = layer.backward(w).copy()
    num = numeric_grad(lambda: scalar_loss(layer, x, w), x)
    assert rel_err(dx, num) < 1e-6


@pytest.mark.parametrize("layer_cls", [ReLU, Tanh, Sigmoid])
def test_activation_input_gradients(layer_cls: type[Layer]) -> None:
    x = np.random.default_rng(1).standard_normal((4, 5))
    if layer_cls is ReLU:
        x[np.abs(x) < 1e-3] = 0.5  # stay off the kink, where the derivative is undefined
    check_input_grad(layer_cls(), x)


@pytest.mark.parametrize("init", ["he", "xavier"])
def test_dense_gradients(init: str) -> None:
    rng = np.random.default_rng(2)
    layer = Dense(5, 3, init=init, rng=rng)
    layer.b[:] = rng.standard_normal(3)
    x = rng.standard_normal((4, 5))
    check_input_grad(layer, x)
    w = rng.standard_normal((4, 3))
    layer.dW[:] = 0
    layer.db[:] = 0
    layer.forward(x, True)
    layer.backward(w)
    assert rel_err(layer.dW, numeric_grad(lambda: scalar_loss(layer, x, w), layer.W)) < 1e-6
    assert rel_err(layer.db, numeric_grad(lambda: scalar_loss(layer, x, w), layer.b)) < 1e-6


def test_dense_backward_accumulates() -> None:
    rng = np.random.default_rng(3)
    layer = Dense(3, 2, rng=rng)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x, True)
    layer.backward(dy)
    once_W, once_b = layer.dW.copy(), layer.db.copy()
    layer.forward(x, True)
    layer.backward(dy)
    np.testing.assert_allclose(layer.dW, 2 * once_W)
    np.testing.assert_allclose(layer.db, 2 * once_b)


def test_dense_init_statistics_and_errors() -> None:
    he = Dense(1000, 200, init="he", rng=np.random.default_rng(4))
    assert abs(he.W.std() - np.sqrt(2 / 1000)) < 0.05 * np.sqrt(2 / 1000)
    xav = Dense(1000, 200, init="xavier", rng=np.random.default_rng(4))
    assert np.abs(xav.W).max() <= np.sqrt(6 / 1200)
    assert np.all(he.b == 0)
    with pytest.raises(UserError):
        Dense(3, 2, init="orthogonal")
    with pytest.raises(UserError):
        Dense(0, 2)


def test_dropout_identity_in_eval() -> None:
    x = np.random.default_rng(5).standard_normal((8, 6))
    layer = Dropout(0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(layer.forward(x, False), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_dropout_scale_and_rate_in_train() -> None:
    p = 0.25
    layer = Dropout(p, np.random.default_rng(0))
    x = np.ones((200, 500))
    y = layer.forward(x, True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - p))
    assert abs(kept.mean() - (1 - p)) < 0.01  # 100k draws: std of the rate ~0.0014
    # backward routes the gradient through the same mask with the same scale
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), y)


def test_dropout_gradient_matches_mask() -> None:
    # With the mask frozen (replay the same rng state) dropout is linear: check it numerically.
    x = np.random.default_rng(6).standard_normal((4, 5))
    w = np.random.default_rng(7).standard_normal((4, 5))

    def f() -> float:
        return float(np.sum(Dropout(0.4, np.random.default_rng(9)).forward(x, True) * w))

    layer = Dropout(0.4, np.random.default_rng(9))
    layer.forward(x, True)
    assert rel_err(layer.backward(w), numeric_grad(f, x)) < 1e-6


def test_dropout_seeded_reproducible() -> None:
    x = np.ones((16, 16), dtype=np.float32)
    a = Dropout(0.5, np.random.default_rng(42)).forward(x, True).copy()
    b = Dropout(0.5, np.random.default_rng(42)).forward(x, True).copy()
    c = Dropout(0.5, np.random.default_rng(43)).forward(x, True).copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32


def test_dropout_rejects_bad_probability() -> None:
    for p in (-0.1, 1.0):
        with pytest.raises(UserError):
            Dropout(p)


def test_sigmoid_extreme_inputs_stay_finite() -> None:
    y = Sigmoid().forward(np.array([[-1e4, 0.0, 1e4]]), True)
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


def test_buffers_reused_across_steps() -> None:
    layer = Dense(4, 3, rng=np.random.default_rng(0))
    x = np.ones((2, 4))
    first = layer.forward(x, True)
    assert layer.forward(x, True) is first  # same batch shape: no new allocation
    assert layer.forward(np.ones((5, 4)), True).shape == (5, 3)  # new shape: a new buffer
