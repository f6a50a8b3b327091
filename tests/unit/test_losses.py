"""Losses: finite-difference gradients, closed-form values, and the global-denominator contract."""

from __future__ import annotations

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.nn.losses import (
    LOSSES,
    accuracy,
    binary_cross_entropy,
    count_correct,
    get_loss,
    mean_squared_error,
    softmax_cross_entropy,
)
from tests.unit.test_layers import numeric_grad, rel_err

B, C = 6, 4


def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((B, C)) * 3
    return [
        ("cross_entropy", logits, rng.integers(0, C, B)),
        ("binary_cross_entropy", logits, rng.integers(0, 2, (B, C)).astype(np.float64)),
        ("binary_cross_entropy", logits[:, :1], rng.random((B, 1))),  # soft targets
        ("mse", logits, rng.standard_normal((B, C))),
    ]


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("denom", [None, 17.0])
def test_gradient_matches_finite_differences(case: int, denom: float | None) -> None:
    name, out, target = cases()[case]
    fn = LOSSES[name]
    _, grad = fn(out, target, denom)
    num = numeric_grad(lambda: fn(out, target, denom)[0], out)
    assert rel_err(grad, num) < 1e-6


def test_cross_entropy_closed_form() -> None:
    # uniform logits: loss is log(C) for every sample, softmax is 1/C everywhere
    loss, grad = softmax_cross_entropy(np.zeros((2, 4)), np.array([1, 3]))
    assert loss == pytest.approx(np.log(4))
    expected = np.full((2, 4), 0.25)
    expected[0, 1] -= 1
    expected[1, 3] -= 1
    np.testing.assert_allclose(grad, expected / 2)


def test_cross_entropy_stable_for_huge_logits() -> None:
    loss, grad = softmax_cross_entropy(np.array([[1e4, 0.0], [0.0, 1e4]]), np.array([0, 0]))
    assert loss == pytest.approx(1e4 / 2)
    assert np.all(np.isfinite(grad))


def test_bce_closed_form_and_stability() -> None:
    loss, _ = binary_cross_entropy(np.zeros((3, 1)), np.array([[0.0], [1.0], [1.0]]))
    assert loss == pytest.approx(np.log(2))
    loss, grad = binary_cross_entropy(np.array([[-1e4], [1e4]]), np.array([[1.0], [0.0]]))
    assert loss == pytest.approx(1e4)
    np.testing.assert_allclose(grad, [[-0.5], [0.5]])


def test_mse_closed_form() -> None:
    loss, grad = mean_squared_error(np.array([[1.0, 2.0], [0.0, 0.0]]), np.zeros((2, 2)))
    assert loss == pytest.approx((1 + 4) / 2)
    np.testing.assert_allclose(grad, [[1.0, 2.0], [0.0, 0.0]])


@pytest.mark.parametrize("case", range(4))
def test_chunks_with_global_denom_sum_to_whole_batch(case: int) -> None:
    # What data parallelism relies on: uneven shards (one of them empty) with the global batch
    # size as denom; summing their losses and gradients gives the whole-batch mean exactly.
    name, out, target = cases()[case]
    fn = LOSSES[name]
    whole_loss, whole_grad = fn(out, target)
    bounds = [0, 3, 3, 5, B]  # shards of 3, 0, 2, 1 samples
    total_loss, grads = 0.0, []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        loss, g = fn(out[lo:hi], target[lo:hi], B)
        assert g.shape == out[lo:hi].shape
        total_loss += loss
        grads.append(g)
    assert total_loss == pytest.approx(whole_loss, rel=1e-12)
    np.testing.assert_allclose(np.concatenate(grads), whole_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch(name: str) -> None:
    out = np.zeros((0, 3), dtype=np.float32)
    target = np.zeros(0, dtype=np.int64) if name == "cross_entropy" else np.zeros((0, 3))
    loss, grad = LOSSES[name](out, target, 8)
    assert loss == 0.0
    assert grad.shape == (0, 3)


def test_float32_in_float32_out() -> None:
    logits = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    assert softmax_cross_entropy(logits, np.array([0, 1, 2, 0]))[1].dtype == np.float32
    assert binary_cross_entropy(logits, np.ones((4, 3)))[1].dtype == np.float32
    assert mean_squared_error(logits, np.ones((4, 3)))[1].dtype == np.float32


def test_accuracy() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert count_correct(logits, np.array([1, 0, 0])) == 2
    assert accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 0.0


def test_bad_names_and_denominators() -> None:
    with pytest.raises(UserError, match="known: binary_cross_entropy, cross_entropy, mse"):
        get_loss("hinge")
    with pytest.raises(UserError):
        softmax_cross_entropy(np.zeros((1, 2)), np.array([0]), denom=0)
