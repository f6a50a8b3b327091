"""C <- alpha op(A) op(B) + beta C through NumPy's own OpenBLAS, called via ctypes.

`np.matmul` has no alpha and no beta: it can neither scale nor accumulate into its output. An SGD
step fused into backward, W <- (1 - lr wd) W - lr xᵀ dy, is one GEMM with alpha = -lr and
beta = 1 - lr wd, where NumPy needs a matmul into scratch and two passes over the weights.

The library is the one NumPy already loaded (found in /proc/self/maps), so the thread pool and
its settings (OPENBLAS_NUM_THREADS) are shared with np.matmul; nothing new is loaded. When that
library or its cblas_?gemm cannot be found, its integer width is unknown, or its result disagrees
with np.matmul on a small case, `gemm` returns False and the caller does the NumPy thing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # the CBLAS enum values

# OpenBLAS builds name their symbols with a prefix and a suffix: plain `cblas_sgemm`, numpy's
# wheels `scipy_cblas_sgemm64_` (the 64_ marks 64-bit integers, ILP64).
_NAMINGS = (("scipy_", "64_"), ("", "64_"), ("scipy_", ""), ("", ""))


class _Gemm:
    """The two bound functions and the integer type their sizes are passed as."""

    def __init__(self, sgemm: Any, dgemm: Any, int_type: Any) -> None:
        self.by_dtype = {np.dtype(np.float32): sgemm, np.dtype(np.float64): dgemm}
        self.int_max = 2 ** (8 * ctypes.sizeof(int_type) - 1) - 1


def _loaded_openblas() -> Iterator[str]:
    """Paths of the OpenBLAS libraries mapped into this process, NumPy's own first."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return iter(())
    return iter(numpy_first(list(openblas_paths(lines)), os.path.dirname(np.__file__)))


def numpy_first(paths: list[str], numpy_dir: str) -> list[str]:
    """`paths` with those NumPy ships (in its package or its wheel's `numpy.libs`) first.

    /proc/self/maps lists libraries by address, not by load order, and a second OpenBLAS
    that something else loaded would otherwise come first: its results would still be right,
    but its own thread pool would spin against NumPy's on the same cores."""
    own = (numpy_dir.rstrip(os.sep) + ".libs" + os.sep, numpy_dir.rstrip(os.sep) + os.sep)
    return sorted(paths, key=lambda path: not path.startswith(own))


def openblas_paths(maps_lines: list[str]) -> Iterator[str]:
    """Each OpenBLAS shared object named in /proc/PID/maps lines, once, in order."""
    seen = set()
    for line in maps_lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path, may hold spaces]
        path = fields[5].strip() if len(fields) == 6 else ""
        name = os.path.basename(path).lower()
        if "openblas" in name and ".so" in name and path not in seen:
            seen.add(path)
            yield path


def _int_type(lib: Any, prefix: str, suffix: str) -> Any:
    """ctypes type of the library's `blasint`: its build config says USE64BITINT when 64-bit;
    without a config function, the 64_ suffix is the convention for ILP64 builds."""
    for name in (f"{prefix}openblas_get_config{suffix}", "openblas_get_config"):
        config = getattr(lib, name, None)
        if config is None:
            continue
        config.restype, config.argtypes = ctypes.c_char_p, []
        text = config() or b""
        return ctypes.c_int64 if b"USE64BITINT" in text else ctypes.c_int32
    return ctypes.c_int64 if suffix == "64_" else None


def _bind(path: str) -> _Gemm | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix, suffix in _NAMINGS:
        sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}", None)
        dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}", None)
        if sgemm is None or dgemm is None:
            continue
        int_type = _int_type(lib, prefix, suffix)
        if int_type is None:
            return None
        for fn, real in ((sgemm, ctypes.c_float), (dgemm, ctypes.c_double)):
            # order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
            fn.restype = None
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, int_type, int_type,
                           int_type, real, ctypes.c_void_p, int_type, ctypes.c_void_p, int_type,
                           real, ctypes.c_void_p, int_type]
        return _Gemm(sgemm, dgemm, int_type)
    return None


def _agrees(g: _Gemm) -> bool:
    """One small case per dtype and transposition, against np.matmul: a library whose ABI we
    guessed wrong gives garbage here rather than in a training run."""
    rng = np.random.default_rng(0)
    a64, b64, c64 = (rng.standard_normal(shape) for shape in ((5, 3), (3, 4), (5, 4)))
    want = -0.5 * (a64 @ b64) + 0.25 * c64
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a, b = a64.astype(dtype), b64.astype(dtype)
        for a_op, b_op in ((a, b), (np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T)):
            c = c64.astype(dtype)
            if not _call(g, a_op, b_op, c, -0.5, 0.25):
                return False
            if not np.allclose(c, want, rtol=tol, atol=tol):
                return False
    return True


_STATE: dict[str, _Gemm | None] = {}


def _library() -> _Gemm | None:
    if "gemm" not in _STATE:
        _STATE["gemm"] = None
        for path in _loaded_openblas():
            g = _bind(path)
            if g is not None and _agrees(g):
                _STATE["gemm"] = g
                break
    return _STATE["gemm"]


def available() -> bool:
    """True when `gemm` can run (the library was found and passed its self-check)."""
    return _library() is not None


def _operand(m: np.ndarray) -> tuple[int, int] | None:
    """(trans flag, leading dimension) of a row-major operand, or None when its layout is
    neither C- nor Fortran-contiguous (a transposed C array is Fortran-contiguous)."""
    if m.flags.c_contiguous:
        return _NO_TRANS, max(1, m.shape[1])
    if m.flags.f_contiguous:
        return _TRANS, max(1, m.shape[0])
    return None


def _call(g: _Gemm, a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float,
          beta: float) -> bool:
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and isinstance(c, np.ndarray)):
        return False
    fn = g.by_dtype.get(c.dtype)
    if fn is None or a.dtype != c.dtype or b.dtype != c.dtype:
        return False
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2:
        return False
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2 or c.shape != (m, n) or min(m, n, k) == 0 or max(m, n, k) > g.int_max:
        return False
    if not c.flags.c_contiguous or not c.flags.writeable:
        return False
    # BLAS reads A and B while it writes C: an overlap would read half-written values.
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        return False
    op_a, op_b = _operand(a), _operand(b)
    if op_a is None or op_b is None:
        return False
    fn(_ROW_MAJOR, op_a[0], op_b[0], m, n, k, float(alpha), a.ctypes.data, op_a[1],
       b.ctypes.data, op_b[1], float(beta), c.ctypes.data, n)
    return True


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float = 1.0,
         beta: float = 0.0) -> bool:
    """c <- alpha a @ b + beta c in place, in one BLAS call; False (c untouched) if not possible.

    a (m, k), b (k, n), c (m, n), all float32 or all float64. a and b may be transposed views
    (`x.T`) of contiguous arrays; c must be C-contiguous, writeable and share no memory with a
    or b; no size may be zero. Anything else returns False, for the caller to use NumPy.
    With beta = 0, c's old contents are not read (BLAS's rule), so c may hold garbage or NaN.
    """
    g = _library()
    return g is not None and _call(g, a, b, c, alpha, beta)
