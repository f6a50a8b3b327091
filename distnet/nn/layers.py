"""MLP layers: each `forward` caches what its `backward` needs, and `backward` sits right under it.

Conventions shared by every layer:
- `forward(x, train)` returns an array the layer owns and overwrites on its next forward with the
  same batch shape (buffers are reused so a training step allocates almost nothing). Copy it if
  you need to keep it; `Sequential.forward` already hands out a copy of the final output.
- `backward(dy)` returns dL/dx (also a layer-owned buffer) and ACCUMULATES (`+=`) parameter
  gradients, so two backward passes without `zero_grad` sum their gradients.
- `Dense.backward(dy, update=SGDUpdate(...))` instead applies a plain SGD step to its own W and
  b from this backward's gradient and leaves the gradient buffer alone (see `SGDUpdate`).
- A parametrised layer has `n_params > 0`; the model binds its parameters and gradients as views
  into one flat buffer with `bind(param_view, grad_view)`: layout W (row-major) then b.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from distnet.common.errors import UserError
from distnet.nn.blas import gemm


def _buffer(buf: np.ndarray | None, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """`buf` again if it has this shape and dtype, else a fresh array (the batch size changed)."""
    if buf is not None and buf.shape == shape and buf.dtype == dtype:
        return buf
    return np.empty(shape, dtype=dtype)


@dataclass(frozen=True)
class SGDUpdate:
    """A plain SGD step (no momentum) to apply inside backward: p <- p - lr (g + wd p), PyTorch's
    rule.

    Done in backward, the weight step is one GEMM straight into W (alpha = -lr, beta = 1): no
    pass writing the gradient out and no pass reading it back for the update. With weight decay
    the GEMM adds into a scratch holding -lr wd W, which is then added to W: folding the decay
    into beta = 1 - lr wd instead would round that factor to a multiple of 2**-24 in float32, so
    a small lr wd would decay by up to twice its amount or (below 2**-25) not at all.
    """

    lr: float
    weight_decay: float = 0.0


class Layer:
    """A stateless-by-default layer: no parameters, nothing to bind."""

    n_params: int = 0

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def bind(self, param_view: np.ndarray, grad_view: np.ndarray) -> None:
        raise TypeError(f"{type(self).__name__} has no parameters to bind")


class Dense(Layer):
    """y = x @ W + b, with W of shape (n_in, n_out).

    init="he" (normal, std sqrt(2/n_in), for ReLU) or "xavier" (uniform, limit
    sqrt(6/(n_in+n_out)), for tanh/sigmoid); biases start at zero. Initial values are drawn in
    float64 from `rng`, so the same seed gives the same start whatever dtype the model uses.
    """

    def __init__(self, n_in: int, n_out: int, init: str = "he",
                 rng: np.random.Generator | None = None) -> None:
        if n_in <= 0 or n_out <= 0:
            raise UserError(f"Dense layer needs positive sizes, got {n_in} -> {n_out}")
        rng = rng if rng is not None else np.random.default_rng(0)
        if init == "he":
            w0 = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
        elif init == "xavier":
            limit = np.sqrt(6.0 / (n_in + n_out))
            w0 = rng.uniform(-limit, limit, size=(n_in, n_out))
        else:
            raise UserError(f"unknown init {init!r} (known: he, xavier)")
        self.n_in, self.n_out = n_in, n_out
        self.n_params = n_in * n_out + n_out
        # Until bound, the layer owns standalone arrays (useful for testing a layer alone).
        self.W = w0
        self.b = np.zeros(n_out)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._dW_step: np.ndarray | None = None
        # Set by Sequential.zero_grad, which has just zeroed dW and db; cleared by backward.
        self.grads_are_zero = False

    def bind(self, param_view: np.ndarray, grad_view: np.ndarray) -> None:
        """Move W, b into `param_view`, point dW, db at `grad_view` (reshaped views, no copies)."""
        split = self.n_in * self.n_out
        W = param_view[:split].reshape(self.n_in, self.n_out)
        b = param_view[split:]
        W[...] = self.W
        b[...] = self.b
        self.W, self.b = W, b
        self.dW = grad_view[:split].reshape(self.n_in, self.n_out)
        self.db = grad_view[split:]
        assert np.shares_memory(self.W, param_view) and np.shares_memory(self.dW, grad_view)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._x = x
        self._y = y = _buffer(self._y, (x.shape[0], self.n_out), self.W.dtype)
        np.matmul(x, self.W, out=y)  # (B, n_in) @ (n_in, n_out) -> (B, n_out)
        y += self.b
        return y

    def backward(self, dy: np.ndarray, need_dx: bool = True,
                 update: SGDUpdate | None = None) -> np.ndarray:
        """dW += x^T dy, db += sum_B dy, and dx = dy W^T (skipped for the first layer).

        With `update`, W and b take that SGD step from x^T dy and sum_B dy instead, and dW, db
        are left as they were; dx is computed first, from the W of the forward pass.
        """
        x = self._x
        assert x is not None, "backward before forward"
        if update is None:
            self._accumulate_grads(x, dy)
        dx = dy[:, :0]  # when not needed: nobody reads it, a zero-width view skips a matmul
        if need_dx:
            self._dx = dx = _buffer(self._dx, x.shape, dy.dtype)
            np.matmul(dy, self.W.T, out=dx)  # (B, n_out) @ (n_out, n_in) -> (B, n_in)
        if update is not None:
            self._sgd_step(x, dy, update)
        return dx

    def _accumulate_grads(self, x: np.ndarray, dy: np.ndarray) -> None:
        if self.grads_are_zero:
            # Accumulating onto zeros is writing: let BLAS store straight into the flat buffer.
            np.matmul(x.T, dy, out=self.dW)  # (n_in, B) @ (B, n_out) -> (n_in, n_out)
            np.sum(dy, axis=0, out=self.db)
            self.grads_are_zero = False
            return
        if not gemm(x.T, dy, self.dW, beta=1.0):
            # numpy's matmul cannot accumulate (no BLAS beta=1), so go through scratch.
            self._dW_step = dW_step = _buffer(self._dW_step, self.dW.shape, self.dW.dtype)
            np.matmul(x.T, dy, out=dW_step)
            self.dW += dW_step
        self.db += dy.sum(axis=0)

    def _sgd_step(self, x: np.ndarray, dy: np.ndarray, update: SGDUpdate) -> None:
        """W <- W - lr (x^T dy + wd W) and b <- b - lr (sum_B dy + wd b)."""
        lr, decay = update.lr, update.lr * update.weight_decay
        if decay:
            # The decay joins the gradient's step before W is touched, so W is rounded once, as
            # in the separate step: a decay far below W's last bit still moves W on average.
            self._dW_step = step = _buffer(self._dW_step, self.W.shape, self.W.dtype)
            np.multiply(self.W, -decay, out=step)
            if not gemm(x.T, dy, step, alpha=-lr, beta=1.0):
                step -= lr * (x.T @ dy)
            self.W += step
        elif not gemm(x.T, dy, self.W, alpha=-lr, beta=1.0):
            self._dW_step = step = _buffer(self._dW_step, self.W.shape, self.W.dtype)
            np.matmul(x.T, dy, out=step)  # (n_in, B) @ (B, n_out) -> (n_in, n_out)
            step *= lr
            self.W -= step
        db = dy.sum(axis=0)
        db += update.weight_decay * self.b
        db *= lr
        self.b -= db


class ReLU(Layer):
    def __init__(self) -> None:
        self._y: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._y = y = _buffer(self._y, x.shape, x.dtype)
        np.maximum(x, 0, out=y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # d relu(x)/dx = 1 where the output is positive, 0 elsewhere.
        assert self._y is not None, "backward before forward"
        self._dx = dx = _buffer(self._dx, dy.shape, dy.dtype)
        np.multiply(dy, self._y > 0, out=dx)
        return dx


class Tanh(Layer):
    def __init__(self) -> None:
        self._y: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._y = y = _buffer(self._y, x.shape, x.dtype)
        np.tanh(x, out=y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # d tanh(x)/dx = 1 - tanh(x)^2
        y = self._y
        assert y is not None, "backward before forward"
        self._dx = dx = _buffer(self._dx, dy.shape, dy.dtype)
        np.multiply(y, y, out=dx)
        np.subtract(1, dx, out=dx)
        dx *= dy
        return dx


class Sigmoid(Layer):
    def __init__(self) -> None:
        self._y: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        # sigmoid(x) = (1 + tanh(x/2)) / 2: never overflows, unlike 1 / (1 + exp(-x)).
        self._y = y = _buffer(self._y, x.shape, x.dtype)
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # d sigmoid(x)/dx = s (1 - s)
        y = self._y
        assert y is not None, "backward before forward"
        self._dx = dx = _buffer(self._dx, dy.shape, dy.dtype)
        np.subtract(1, y, out=dx)
        dx *= y
        dx *= dy
        return dx


class Dropout(Layer):
    """Inverted dropout: in training zero each unit with probability p and scale the survivors by
    1/(1-p), so evaluation is the identity and needs no rescaling."""

    def __init__(self, p: float, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= p < 1.0:
            raise UserError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._mask: np.ndarray | None = None  # 0 or 1/(1-p) per unit; None means identity
        self._y: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train or self.p == 0.0:
            self._mask = None
            return x
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        self._mask = mask = _buffer(self._mask, x.shape, dtype)
        self.rng.random(out=mask, dtype=dtype)
        # keep where u >= p, i.e. with probability 1 - p
        np.greater_equal(mask, self.p, out=mask)
        mask *= 1.0 / (1.0 - self.p)
        self._y = y = _buffer(self._y, x.shape, x.dtype)
        np.multiply(x, mask, out=y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return dy
        self._dx = dx = _buffer(self._dx, dy.shape, dy.dtype)
        np.multiply(dy, self._mask, out=dx)
        return dx


ACTIVATIONS: dict[str, type[Layer]] = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
