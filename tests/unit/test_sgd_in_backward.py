"""The SGD step fused into backward gives the weights of backward-then-opt.step(), step by step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.nn import blas, layers
from distnet.nn.layers import SGDUpdate
from distnet.nn.losses import softmax_cross_entropy
from distnet.nn.model import Sequential, build_mlp
from distnet.nn.optim import SGD

N_IN, HIDDEN, N_OUT, BATCH = 7, [16, 8], 5, 9


def _pair(dtype: Any, dropout: float, weight_decay: float) -> tuple[
        tuple[Sequential, SGD], tuple[Sequential, SGD]]:
    """Two identical models (same init, same dropout stream), each with its SGD."""
    out = []
    for _ in range(2):
        model = build_mlp(N_IN, HIDDEN, N_OUT, dropout=dropout, dtype=dtype, seed=3)
        out.append((model, SGD(model.params, model.grads, lr=0.1, weight_decay=weight_decay)))
    return out[0], out[1]


def _batches(steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    return [(rng.standard_normal((BATCH, N_IN)), rng.integers(0, N_OUT, BATCH))
            for _ in range(steps)]


def _train(model: Sequential, opt: SGD, fused: bool, steps: int = 6) -> list[np.ndarray]:
    """Parameters after each step; the learning rate changes halfway, as a schedule would."""
    after = []
    for i, (x, y) in enumerate(_batches(steps)):
        if i == steps // 2:
            opt.lr = 0.05
        _, dlogits = softmax_cross_entropy(model.forward(x, True), y)
        if fused:
            update = opt.update_in_backward()
            assert update is not None
            model.backward(dlogits, update=update)
        else:
            model.zero_grad(clear=False)
            model.backward(dlogits)
            opt.step()
        after.append(model.params.copy())
    return after


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_fused_step_gives_the_weights_of_the_separate_step(dtype: Any, tol: float,
                                                           weight_decay: float,
                                                           dropout: float) -> None:
    (plain, plain_opt), (fused, fused_opt) = _pair(dtype, dropout, weight_decay)
    want = _train(plain, plain_opt, fused=False)
    got = _train(fused, fused_opt, fused=True)
    for step, (w, g) in enumerate(zip(want, got, strict=True)):
        scale = np.max(np.abs(w))
        assert np.max(np.abs(w - g)) <= tol * scale, f"step {step}"
    assert not np.array_equal(want[0], want[-1])  # the weights did move


@pytest.mark.parametrize("weight_decay", [1e-6, 1e-5])
def test_small_float32_decay_is_applied_in_full(weight_decay: float) -> None:
    """With lr wd near or below float32's last bit of W, one fused step's decay (W after the
    step with decay minus W after it without) is -lr wd W on average. Folded into one factor
    1 - lr wd it was not: that factor rounds to 1 (lr wd = 1e-8, no decay at all) or to
    1 - 1.19e-7 (lr wd = 1e-7, 1.15x the decay)."""
    lr, rng = 0.01, np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    dy = rng.standard_normal((16, 256)).astype(np.float32)
    after = []
    for wd in (0.0, weight_decay):
        layer = layers.Dense(256, 256, rng=np.random.default_rng(1))
        layer.W, layer.b = layer.W.astype(np.float32), layer.b.astype(np.float32)
        w0 = layer.W.astype(np.float64)
        layer.forward(x, True)
        layer.backward(dy, need_dx=False, update=SGDUpdate(lr, wd))
        after.append(layer.W.astype(np.float64))
    want = -lr * weight_decay * w0
    ratio = float(np.sum((after[1] - after[0]) * want) / np.sum(want * want))
    assert abs(ratio - 1.0) < 0.05, f"decay applied {ratio:.3f}x"


def test_numpy_fallback_gives_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    if not blas.available():
        pytest.skip("no usable OpenBLAS: both sides would run the fallback")
    (blas_model, blas_opt), (np_model, np_opt) = _pair(np.float64, 0.0, 0.01)
    want = _train(blas_model, blas_opt, fused=True)
    monkeypatch.setattr(layers, "gemm", lambda *args, **kwargs: False)
    got = _train(np_model, np_opt, fused=True)
    np.testing.assert_allclose(got[-1], want[-1], rtol=1e-12, atol=1e-14)


def test_accumulating_backward_without_blas_still_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "gemm", lambda *args, **kwargs: False)
    model = build_mlp(N_IN, HIDDEN, N_OUT, dtype=np.float64, seed=1)
    x, y = _batches(1)[0]
    model.zero_grad()
    model.backward(softmax_cross_entropy(model.forward(x, True), y)[1])
    once = model.grads.copy()
    model.backward(softmax_cross_entropy(model.forward(x, True), y)[1])
    np.testing.assert_allclose(model.grads, 2 * once, rtol=1e-12)


def test_fused_backward_leaves_the_gradients_alone_and_returns_dx_of_the_old_weights() -> None:
    (plain, _), (fused, fused_opt) = _pair(np.float64, 0.0, 0.0)
    x, y = _batches(1)[0]
    fused.grads[:] = 7.0
    plain.zero_grad()
    want_dx = plain.backward(softmax_cross_entropy(plain.forward(x, True), y)[1],
                             need_input_grad=True)
    before = fused.params.copy()
    dx = fused.backward(softmax_cross_entropy(fused.forward(x, True), y)[1],
                        need_input_grad=True, update=fused_opt.update_in_backward())
    assert np.all(fused.grads == 7.0)
    assert not np.array_equal(fused.params, before)
    assert want_dx is not None and dx is not None
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-15)


def test_a_hook_and_an_update_together_are_refused() -> None:
    model = build_mlp(N_IN, HIDDEN, N_OUT, seed=0)
    x, y = _batches(1)[0]
    dlogits = softmax_cross_entropy(model.forward(x, True), y)[1]
    before = model.params.copy()
    with pytest.raises(UserError, match="hook"):
        model.backward(dlogits, hook=lambda s, e: None, update=SGDUpdate(0.1))
    np.testing.assert_array_equal(model.params, before)


def test_update_in_backward_only_without_momentum() -> None:
    params, grads = np.zeros(4), np.zeros(4)
    assert SGD(params, grads, lr=0.1, momentum=0.9).update_in_backward() is None
    assert SGD(params, grads, lr=0.1, momentum=0.9, nesterov=True).update_in_backward() is None
    opt = SGD(params, grads, lr=0.1, weight_decay=0.5)
    assert opt.update_in_backward() == SGDUpdate(0.1, 0.5)
    opt.lr = 0.2
    update = opt.update_in_backward()
    assert update is not None and update.lr == 0.2 and update.weight_decay == 0.5
