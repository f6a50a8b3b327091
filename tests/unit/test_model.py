"""Sequential: flat buffers are real views, whole-model gradients, backward hooks, builder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.nn.layers import Dense, Dropout, ReLU, Sigmoid, Tanh
from distnet.nn.losses import softmax_cross_entropy
from distnet.nn.model import Sequential, build_mlp, parse_hidden
from tests.unit.test_layers import numeric_grad, rel_err


def test_params_and_grads_are_views() -> None:
    model = build_mlp(3, [4], 2, seed=0)
    first, last = model.layers[0], model.layers[-1]
    assert isinstance(first, Dense) and isinstance(last, Dense)
    assert np.shares_memory(first.W, model.params) and np.shares_memory(first.dW, model.grads)
    assert model.params.flags.c_contiguous and model.grads.flags.c_contiguous
    model.params[0] = 123.0
    assert first.W[0, 0] == 123.0
    model.params[model.param_slices[1][1] - 1] = -7.0  # last entry: the last layer's last bias
    assert last.b[-1] == -7.0
    last.W[...] = 5.0  # and the other way round
    start, end = model.param_slices[1]
    assert np.all(model.params[start:start + last.W.size] == 5.0)
    assert model.params.size == model.grads.size == (3 * 4 + 4) + (4 * 2 + 2)


def test_layout_is_forward_order_w_then_b() -> None:
    model = build_mlp(3, [4, 5], 2, seed=1)
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    flat = np.concatenate([np.concatenate([d.W.ravel(), d.b]) for d in dense])
    np.testing.assert_array_equal(flat, model.params)
    assert model.param_slices == [(0, 16), (16, 41), (41, 53)]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_whole_model_gradient(activation: str) -> None:
    model = build_mlp(5, [6, 4], 3, activation=activation, dtype=np.float64, seed=2)
    rng = np.random.default_rng(3)
    model.params[:] = rng.standard_normal(model.params.size) * 0.5
    x, y = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)

    def loss() -> float:
        return softmax_cross_entropy(model.forward(x, True), y)[0]

    model.zero_grad()
    _, dlogits = softmax_cross_entropy(model.forward(x, True), y)
    dx = model.backward(dlogits, need_input_grad=True)
    assert rel_err(model.grads, numeric_grad(loss, model.params)) < 1e-6
    assert dx is not None and rel_err(dx, numeric_grad(loss, x)) < 1e-6


def test_backward_accumulates_until_zero_grad() -> None:
    model = build_mlp(4, [5], 3, dtype=np.float64, seed=4)
    x, y = np.random.default_rng(5).standard_normal((6, 4)), np.arange(6) % 3

    def one_backward() -> None:
        model.backward(softmax_cross_entropy(model.forward(x, True), y)[1])

    model.zero_grad()
    one_backward()
    once = model.grads.copy()
    one_backward()
    np.testing.assert_allclose(model.grads, 2 * once)
    model.zero_grad()
    assert not model.grads.any()
    one_backward()
    np.testing.assert_allclose(model.grads, once)


def test_backward_hook_reverse_order_tiling() -> None:
    model = build_mlp(4, [8, 8, 8], 3, dropout=0.1, seed=0)
    calls: list[tuple[int, int]] = []
    x = np.random.default_rng(0).standard_normal((5, 4))
    dlogits = softmax_cross_entropy(model.forward(x, True), np.zeros(5, dtype=int))[1]
    model.zero_grad()
    model.backward(dlogits, hook=lambda start, end: calls.append((start, end)))
    assert calls == list(reversed(model.param_slices))  # once each, last layer first
    # the slices tile the buffer exactly, without gaps or overlaps
    ordered = sorted(calls)
    assert ordered[0][0] == 0 and ordered[-1][1] == model.params.size
    assert all(a[1] == b[0] for a, b in zip(ordered[:-1], ordered[1:], strict=True))


def test_hook_sees_final_gradients() -> None:
    # When hook(start, end) runs, grads[start:end] must already equal what it is after backward.
    model = build_mlp(4, [6, 6], 3, dtype=np.float64, seed=6)
    x, y = np.random.default_rng(7).standard_normal((5, 4)), np.arange(5) % 3
    snapshots: dict[tuple[int, int], np.ndarray] = {}
    model.zero_grad()
    model.backward(softmax_cross_entropy(model.forward(x, True), y)[1],
                   hook=lambda s, e: snapshots.__setitem__((s, e), model.grads[s:e].copy()))
    for (s, e), snap in snapshots.items():
        np.testing.assert_array_equal(snap, model.grads[s:e])


def test_forward_output_is_a_copy() -> None:
    model = build_mlp(3, [4], 2, seed=0)
    x = np.ones((2, 3), dtype=np.float32)
    a = model.forward(x, False)
    b = model.forward(2 * x, False)
    assert not np.shares_memory(a, b)
    assert a.dtype == np.float32


def test_same_seed_same_params_and_dtype_independent_init() -> None:
    a = build_mlp(10, [7], 3, seed=11)
    b = build_mlp(10, [7], 3, seed=11)
    c = build_mlp(10, [7], 3, seed=12)
    d = build_mlp(10, [7], 3, seed=11, dtype=np.float64)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    np.testing.assert_array_equal(a.params, d.params.astype(np.float32))
    assert a.dtype == np.float32 and d.params.dtype == np.float64


def test_builder_layers_and_inits() -> None:
    model = build_mlp(3, [4, 5], 2, activation="tanh", dropout=0.5, seed=0)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [Dense, Tanh, Dropout, Dense, Tanh, Dropout, Dense]
    assert [type(x) for x in build_mlp(3, [4], 2, activation="sigmoid").layers] == \
        [Dense, Sigmoid, Dense]
    assert [type(x) for x in build_mlp(3, [4], 2).layers] == [Dense, ReLU, Dense]
    assert [type(x) for x in build_mlp(3, [], 2).layers] == [Dense]
    # all dropout layers draw from the model's generator
    assert all(layer.rng is model.rng for layer in model.layers if isinstance(layer, Dropout))


def test_dropout_seed_separate_from_init() -> None:
    a = build_mlp(6, [50], 2, dropout=0.5, seed=3, dropout_seed=100)
    b = build_mlp(6, [50], 2, dropout=0.5, seed=3, dropout_seed=101)
    np.testing.assert_array_equal(a.params, b.params)
    x = np.ones((4, 6))
    assert not np.array_equal(a.forward(x, True), b.forward(x, True))
    np.testing.assert_array_equal(a.forward(x, False), b.forward(x, False))


def test_rng_state_round_trip_is_json() -> None:
    model = build_mlp(6, [50], 2, dropout=0.5, seed=3)
    x = np.ones((4, 6))
    model.forward(x, True)
    state = json.loads(json.dumps(model.get_rng_state()))
    first = model.forward(x, True)
    model.set_rng_state(state)
    np.testing.assert_array_equal(model.forward(x, True), first)


def test_builder_rejects_bad_input() -> None:
    with pytest.raises(UserError, match="known: relu, sigmoid, tanh"):
        build_mlp(3, [4], 2, activation="gelu")
    with pytest.raises(UserError):
        build_mlp(3, [4], 2, dropout=1.0)
    with pytest.raises(UserError):
        build_mlp(3, [0], 2)


def test_parse_hidden() -> None:
    assert parse_hidden("256,256") == [256, 256]
    assert parse_hidden(" 64 , 32 ") == [64, 32]
    assert parse_hidden("") == []
    for bad in ("a,b", "64,,32", "-1", "0", "1.5"):
        with pytest.raises(UserError):
            parse_hidden(bad)


def test_sequential_of_plain_layers() -> None:
    model = Sequential([ReLU()], dtype=np.float64)
    assert model.params.size == 0 and model.param_slices == []
    np.testing.assert_array_equal(model.forward(np.array([[-1.0, 2.0]]), True), [[0.0, 2.0]])


def test_shards_with_global_denom_sum_to_whole_batch_gradient() -> None:
    # Data parallelism in one process: uneven shards (one empty) with the global batch size as
    # denom, their gradients summed (here: accumulated), equal the whole-batch gradient.
    model = build_mlp(5, [7, 6], 3, dtype=np.float64, seed=8)
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((10, 5)), rng.integers(0, 3, 10)
    model.zero_grad()
    model.backward(softmax_cross_entropy(model.forward(x, True), y)[1])
    whole = model.grads.copy()
    summed = np.zeros_like(whole)
    for lo, hi in [(0, 4), (4, 4), (4, 9), (9, 10)]:
        model.grads[:] = 7.0  # stale values that zero_grad must clear
        model.zero_grad()
        model.backward(softmax_cross_entropy(model.forward(x[lo:hi], True), y[lo:hi], 10)[1])
        summed += model.grads
    np.testing.assert_allclose(summed, whole, rtol=1e-12, atol=1e-15)
