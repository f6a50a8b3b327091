"""Optimisers that update the model's flat `params` in place from its flat `grads`.

Update rules follow PyTorch's definitions (weight decay is L2 added to the gradient), so results
can be compared with it. Every state buffer is allocated once in the constructor; `step()` only
runs in-place ufuncs on preallocated arrays.
"""

from __future__ import annotations

import math

import numpy as np

from distnet.common.errors import UserError
from distnet.nn.layers import SGDUpdate

StateDict = dict[str, "np.ndarray | float | int"]


class Optimizer:
    """Shared plumbing: the two flat buffers, a scratch array and the mutable learning rate."""

    _buffers: tuple[str, ...] = ()  # names of array state saved by state_dict
    _scalars: tuple[str, ...] = ("lr", "weight_decay")

    def __init__(self, params: np.ndarray, grads: np.ndarray, lr: float,
                 weight_decay: float = 0.0) -> None:
        if params.shape != grads.shape or params.ndim != 1:
            raise ValueError("params and grads must be 1-D buffers of the same size")
        if lr < 0 or weight_decay < 0:
            raise UserError(f"lr and weight decay must be >= 0, got {lr}, {weight_decay}")
        self.params, self.grads = params, grads
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self._g = np.empty_like(params)  # the effective gradient of this step

    def _effective_grad(self) -> np.ndarray:
        """grad + weight_decay * param, into scratch (grads stay as the trainer left them)."""
        g = self._g
        if self.weight_decay:
            np.multiply(self.params, self.weight_decay, out=g)
            g += self.grads
        else:
            np.copyto(g, self.grads)
        return g

    def step(self) -> None:
        raise NotImplementedError

    def update_in_backward(self) -> SGDUpdate | None:
        """This step as an `SGDUpdate` for `Sequential.backward(update=...)`, which then
        replaces `step()`; None when the rule needs state a layer's backward does not hold
        (moments, velocity). Ask again each step: the learning rate may have changed."""
        return None

    def state_dict(self) -> StateDict:
        """Copies of every buffer and scalar needed for a bit-exact continuation."""
        state: StateDict = {name: getattr(self, name) for name in self._scalars}
        for name in self._buffers:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state: StateDict) -> None:
        for name in self._scalars:
            setattr(self, name, type(getattr(self, name))(state[name]))
        for name in self._buffers:
            buf = getattr(self, name)
            value = np.asarray(state[name])
            if value.shape != buf.shape:
                raise UserError(f"optimizer state {name!r} has shape {value.shape}, "
                                f"expected {buf.shape}")
            np.copyto(buf, value)


UPDATE_BLOCK = 1 << 16  # elements per block of the plain SGD update (256 KiB of float32: L2)


class SGD(Optimizer):
    """p -= lr * g, with g = grad + wd p; with momentum: v = mu v + g, then g = v (or, Nesterov,
    g + mu v). v starts at zero, so the first step equals PyTorch's v = g."""

    _buffers = ("velocity",)
    _scalars = ("lr", "weight_decay", "momentum")

    def __init__(self, params: np.ndarray, grads: np.ndarray, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, grads, lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise UserError("nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.velocity = np.zeros_like(params)
        self._tmp = np.empty_like(params) if nesterov else self._g

    def update_in_backward(self) -> SGDUpdate | None:
        if self.momentum:  # the step needs the velocity
            return None
        return SGDUpdate(self.lr, self.weight_decay)

    def step(self) -> None:
        if not self.momentum and not self.weight_decay:  # plain SGD: the benchmark's hot path
            # Block by block through a cache-sized scratch: lr·g never goes out to memory and
            # back (one pass over p and g instead of two; the buffers outsize the caches).
            n, block = self.params.shape[0], UPDATE_BLOCK
            scratch = self._g[:block]
            for lo in range(0, n, block):
                hi = min(n, lo + block)
                s = scratch[:hi - lo]
                np.multiply(self.grads[lo:hi], self.lr, out=s)
                np.subtract(self.params[lo:hi], s, out=self.params[lo:hi])
            return
        g = self._effective_grad()
        if self.momentum:
            v = self.velocity
            v *= self.momentum
            v += g
            if self.nesterov:
                np.multiply(v, self.momentum, out=self._tmp)
                g += self._tmp
            else:
                np.copyto(g, v)
        g *= self.lr
        self.params -= g


class Adam(Optimizer):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)   (bias-corrected, Kingma & Ba 2015)."""

    _buffers = ("exp_avg", "exp_avg_sq")
    _scalars = ("lr", "weight_decay", "beta1", "beta2", "eps", "t")

    def __init__(self, params: np.ndarray, grads: np.ndarray, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, grads, lr, weight_decay)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.t = 0
        self.exp_avg = np.zeros_like(params)
        self.exp_avg_sq = np.zeros_like(params)
        self._denom = np.empty_like(params)

    def step(self) -> None:
        self.t += 1
        g = self._effective_grad()
        m, v, denom = self.exp_avg, self.exp_avg_sq, self._denom
        m *= self.beta1
        np.multiply(g, 1 - self.beta1, out=denom)
        m += denom
        v *= self.beta2
        np.multiply(g, g, out=g)
        g *= 1 - self.beta2
        v += g
        bias1 = 1 - self.beta1 ** self.t
        bias2 = 1 - self.beta2 ** self.t
        np.sqrt(v, out=denom)
        denom /= math.sqrt(bias2)
        denom += self.eps
        np.divide(m, denom, out=denom)
        denom *= self.lr / bias1
        self.params -= denom


class Adadelta(Optimizer):
    """Zeiler 2012: s = rho s + (1-rho) g^2; dx = sqrt(u + eps)/sqrt(s + eps) g;
    u = rho u + (1-rho) dx^2; p -= lr dx."""

    _buffers = ("square_avg", "acc_delta")
    _scalars = ("lr", "weight_decay", "rho", "eps")

    def __init__(self, params: np.ndarray, grads: np.ndarray, lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, grads, lr, weight_decay)
        self.rho = float(rho)
        self.eps = float(eps)
        self.square_avg = np.zeros_like(params)
        self.acc_delta = np.zeros_like(params)
        self._tmp = np.empty_like(params)

    def step(self) -> None:
        g = self._effective_grad()
        s, u, tmp = self.square_avg, self.acc_delta, self._tmp
        s *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.rho
        s += tmp
        # delta = sqrt(u + eps) / sqrt(s + eps) * g, built in g
        np.add(u, self.eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        g *= tmp
        np.add(s, self.eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        g /= tmp
        u *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.rho
        u += tmp
        g *= self.lr
        self.params -= g


OPTIMIZERS = ("adadelta", "adam", "sgd")


def make_optimizer(name: str, params: np.ndarray, grads: np.ndarray, lr: float,
                   momentum: float = 0.0, weight_decay: float = 0.0) -> Optimizer:
    """The optimiser called `name` (momentum only matters for sgd)."""
    key = name.lower()
    if key == "sgd":
        return SGD(params, grads, lr, momentum=momentum, weight_decay=weight_decay)
    if key == "adam":
        return Adam(params, grads, lr=lr, weight_decay=weight_decay)
    if key == "adadelta":
        return Adadelta(params, grads, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")


SCHEDULES = ("constant", "cosine", "step")


def lr_at(schedule: str, base_lr: float, epoch: int, epochs: int, step_size: int = 10,
          gamma: float = 0.1) -> float:
    """Learning rate for 0-based `epoch` of `epochs`.

    constant: base_lr; step: base_lr * gamma^(epoch // step_size);
    cosine: base_lr * (1 + cos(pi * epoch / epochs)) / 2, from base_lr down towards 0.
    """
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        if step_size <= 0:
            raise UserError(f"step schedule needs step_size > 0, got {step_size}")
        return base_lr * gamma ** (epoch // step_size)
    if schedule == "cosine":
        if epochs <= 0:
            raise UserError(f"cosine schedule needs epochs > 0, got {epochs}")
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise UserError(f"unknown lr schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
