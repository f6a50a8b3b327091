"""A Sequential model whose parameters and gradients live in ONE flat buffer each.

Every parametrised layer's W and b are views into `params` (and dW, db into `grads`), laid out in
forward layer order, W then b. So a data-parallel step is one all-reduce of `grads` (or one per
bucket of `param_slices`), the optimiser updates one array, and a checkpoint is one array.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from distnet.common.errors import UserError
from distnet.nn.layers import ACTIVATIONS, Dense, Dropout, Layer, SGDUpdate

GradHook = Callable[[int, int], None]


class LayerRecorder(Protocol):
    """Told each layer's forward/backward span (time.perf_counter seconds); see distnet/observe."""

    def record_layer(self, phase: str, index: int, name: str, t0: float, t1: float) -> None: ...


class Sequential:
    """Layers applied in order; `rng` is the generator the Dropout layers draw from."""

    def __init__(self, layers: Sequence[Layer], dtype: Any = np.float32,
                 rng: np.random.Generator | None = None) -> None:
        self.layers = list(layers)
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        total = sum(layer.n_params for layer in self.layers)
        self.params = np.zeros(total, dtype=self.dtype)
        self.grads = np.zeros(total, dtype=self.dtype)
        self.param_slices: list[tuple[int, int]] = []
        # Off by default: timing every layer is for --trace, the plain loops stay branch-free.
        self.recorder: LayerRecorder | None = None
        self._slice_of_layer: dict[int, tuple[int, int]] = {}  # parametrised layers only
        start = 0
        for i, layer in enumerate(self.layers):
            if layer.n_params == 0:
                continue
            end = start + layer.n_params
            layer.bind(self.params[start:end], self.grads[start:end])
            self.param_slices.append((start, end))
            self._slice_of_layer[i] = (start, end)
            start = end

    def use_grad_buffer(self, buf: np.ndarray) -> None:
        """Move the gradients into `buf` (same length and dtype; the current values come along)
        and point every layer's gradient views at it. For a buffer the all-reduce reads in
        place (the `shm` window): backward then writes straight where the peers read. Call it
        before building the optimiser, which holds `grads`."""
        if buf.shape != self.grads.shape or buf.dtype != self.dtype:
            raise UserError(f"gradient buffer must be {self.grads.shape} {self.dtype}, got "
                            f"{buf.shape} {buf.dtype}")
        np.copyto(buf, self.grads)
        self.grads = buf
        for i, (start, end) in self._slice_of_layer.items():
            self.layers[i].bind(self.params[start:end], buf[start:end])

    @property
    def n_params(self) -> int:
        return int(self.params.size)

    def param_tensors(self) -> list[tuple[int, tuple[int, ...]]]:
        """(offset in `params`, shape) of every parameter tensor, in buffer order: a Dense
        layer's W (n_in, n_out) then b (n_out,). Gradient compression needs the matrices."""
        out: list[tuple[int, tuple[int, ...]]] = []
        for i, (start, end) in self._slice_of_layer.items():
            layer = self.layers[i]
            if isinstance(layer, Dense):
                out += [(start, layer.W.shape), (start + layer.W.size, layer.b.shape)]
            else:
                out.append((start, (end - start,)))
        return out

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """(B, n_in) -> (B, n_out); the result is the caller's own copy.

        `x` itself is cached by reference (no copy), so leave it unchanged until backward.
        """
        out = np.ascontiguousarray(x, dtype=self.dtype)
        rec = self.recorder
        for i, layer in enumerate(self.layers):
            if rec is None:
                out = layer.forward(out, train)
                continue
            t0 = time.perf_counter()
            out = layer.forward(out, train)
            rec.record_layer("forward", i, type(layer).__name__, t0, time.perf_counter())
        # Layers reuse their output buffers, so hand out a copy (tiny: (B, n_out)).
        return np.array(out, copy=True)

    def backward(self, dout: np.ndarray, hook: GradHook | None = None,
                 need_input_grad: bool = False,
                 update: SGDUpdate | None = None) -> np.ndarray | None:
        """Accumulate dL/dparams into `grads` given dL/dout from the last forward.

        `hook(start, end)` runs as soon as the gradients of `params[start:end]` are final, in
        reverse layer order, so a caller can start all-reducing that bucket while earlier layers
        are still in backward. Returns dL/dx only if `need_input_grad` (else the first layer
        skips that matmul, as frameworks do for inputs that need no gradient).

        With `update` (from `SGD.update_in_backward`) every layer instead takes that SGD step
        from this backward's gradient as soon as its input gradient is computed, and `grads`
        is not written: the step IS the optimiser step, so do not call `opt.step()` after it.
        No hook then, as there are no gradients to hand to anyone.
        """
        if update is not None:
            if hook is not None:
                raise UserError("a backward that updates the parameters has no gradients for "
                                "a hook; use one or the other")
            if any(not isinstance(self.layers[i], Dense) for i in self._slice_of_layer):
                raise UserError("only Dense layers can take their SGD step inside backward")
        d = np.ascontiguousarray(dout, dtype=self.dtype)
        rec = self.recorder
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            t0 = time.perf_counter() if rec is not None else 0.0
            if isinstance(layer, Dense):
                d = layer.backward(d, need_dx=i > 0 or need_input_grad, update=update)
            else:
                d = layer.backward(d)
            if rec is not None:
                rec.record_layer("backward", i, type(layer).__name__, t0, time.perf_counter())
            if hook is not None and i in self._slice_of_layer:
                hook(*self._slice_of_layer[i])
        return np.array(d, copy=True) if need_input_grad else None

    def zero_grad(self, clear: bool = True) -> None:
        """Zero `grads`. The next backward of each Dense layer then stores its gradients
        directly instead of adding them to zeros, so do not write into `grads` in between.

        clear=False skips the memory writes for the Dense layers' slices (their next backward
        overwrites them anyway), as PyTorch's set_to_none: until that backward they hold the
        last step's values. Filling the 7 MiB of the bench MLP costs 0.6 ms of a 9 ms step.
        """
        for i, (start, end) in self._slice_of_layer.items():
            layer = self.layers[i]
            if isinstance(layer, Dense):
                layer.grads_are_zero = True
                if not clear:
                    continue
            self.grads[start:end] = 0

    def get_rng_state(self) -> dict[str, Any]:
        """The dropout generator's state as plain JSON-serialisable data."""
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        # Assigning in place keeps the Generator object the Dropout layers hold.
        self.rng.bit_generator.state = state


DTYPES = ("float32", "float64")  # what the engine and every all-reduce support


def build_mlp(n_in: int, hidden: list[int], n_out: int, activation: str = "relu",
              dropout: float = 0.0, dtype: Any = np.float32, seed: int = 0,
              dropout_seed: int | None = None) -> Sequential:
    """Dense -> activation [-> Dropout] per hidden layer, then a final Dense producing logits.

    He init for relu, Xavier for tanh/sigmoid, drawn from `seed` so every rank builds identical
    parameters. Dropout masks come from a separate stream: `dropout_seed` if given (a trainer may
    pass seed + rank), else one derived from `seed` that never overlaps the init stream.
    """
    if activation not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise UserError(f"unknown activation {activation!r} (known: {known})")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    if n_in <= 0 or n_out <= 0 or any(h <= 0 for h in hidden):
        raise UserError(f"layer sizes must be positive, got {n_in}, {hidden}, {n_out}")
    init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
    init_rng = np.random.default_rng(init_seq)
    drop_rng = np.random.default_rng(drop_seq if dropout_seed is None else dropout_seed)
    init = "he" if activation == "relu" else "xavier"
    layers: list[Layer] = []
    width = n_in
    for h in hidden:
        layers += [Dense(width, h, init=init, rng=init_rng), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(Dropout(dropout, drop_rng))
        width = h
    layers.append(Dense(width, n_out, init=init, rng=init_rng))
    return Sequential(layers, dtype=dtype, rng=drop_rng)


def parse_hidden(spec: str) -> list[int]:
    """"256,256" -> [256, 256]; "" -> [] (no hidden layer: a linear model)."""
    spec = spec.strip()
    if not spec:
        return []
    try:
        sizes = [int(part) for part in spec.split(",")]
    except ValueError:
        raise UserError(f"hidden sizes must be comma-separated integers, got {spec!r}") from None
    if any(s <= 0 for s in sizes):
        raise UserError(f"hidden sizes must be positive, got {spec!r}")
    return sizes
