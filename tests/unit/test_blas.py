"""distnet.nn.blas: one GEMM against np.matmul, and every input it must refuse instead of using."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np
import pytest

from distnet.nn import blas


@pytest.fixture(autouse=True)
def _needs_openblas() -> None:
    # The wheels of numpy bundle OpenBLAS; a numpy built on another BLAS is a plain fallback.
    if not list(blas._loaded_openblas()):
        pytest.skip("numpy is not linked against OpenBLAS here")


def _rand(rng: np.random.Generator, shape: tuple[int, int], dtype: Any,
          transposed: bool) -> np.ndarray:
    """An array of `shape`, either C-contiguous or the transposed view of a C array."""
    if transposed:
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]).astype(dtype)).T
    return rng.standard_normal(shape).astype(dtype)


def test_numpy_openblas_is_found_and_passes_its_self_check() -> None:
    assert blas.available()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 13, 5), (64, 3, 33), (2, 129, 1)])
def test_gemm_matches_matmul(dtype: Any, trans_a: bool, trans_b: bool, m: int, k: int,
                             n: int) -> None:
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = _rand(rng, (m, k), dtype, trans_a)
    b = _rand(rng, (k, n), dtype, trans_b)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for alpha, beta in ((1.0, 0.0), (-0.01, 1.0), (0.5, 0.999), (2.0, -1.5)):
        c = c0.copy()
        assert blas.gemm(a, b, c, alpha=alpha, beta=beta)
        want = alpha * (a.astype(np.float64) @ b.astype(np.float64)) + beta * c0
        np.testing.assert_allclose(c, want, rtol=tol, atol=tol * max(1, k))


def test_beta_zero_ignores_the_old_contents() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    c = np.full((4, 2), np.nan)
    assert blas.gemm(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-12)


def _refused(a: Any, b: Any, c: Any) -> None:
    before = np.array(c, copy=True)
    assert not blas.gemm(a, b, c, alpha=-1.0, beta=0.5)
    np.testing.assert_array_equal(np.asarray(c), before)  # untouched


def test_mismatched_or_unsupported_dtypes_are_refused() -> None:
    a, b, c = np.ones((3, 4)), np.ones((4, 5)), np.zeros((3, 5))
    _refused(a.astype(np.float32), b, c)
    _refused(a, b.astype(np.float32), c)
    _refused(a, b, c.astype(np.float32))
    _refused(a.astype(np.float16), b.astype(np.float16), c.astype(np.float16))
    _refused(a.astype(np.int64), b.astype(np.int64), c.astype(np.int64))
    _refused(a.astype(np.complex128), b.astype(np.complex128), c.astype(np.complex128))


def test_wrong_shapes_and_sizes_are_refused() -> None:
    a, b, c = np.ones((3, 4)), np.ones((4, 5)), np.zeros((3, 5))
    _refused(a, np.ones((3, 5)), c)  # inner sizes differ
    _refused(a, b, np.zeros((3, 4)))
    _refused(a, b, np.zeros((5, 3)))
    _refused(np.ones(4), b, c)  # 1-D
    _refused(a, b, np.zeros((1, 3, 5)))  # 3-D
    _refused(np.ones((3, 0)), np.ones((0, 5)), c)  # k = 0
    _refused(np.ones((0, 4)), b, np.zeros((0, 5)))  # m = 0
    _refused(a.tolist(), b, c)  # not arrays


def test_layouts_blas_cannot_read_are_refused() -> None:
    a, b = np.ones((3, 4)), np.ones((4, 5))
    wide = np.zeros((3, 10))
    _refused(a, b, wide[:, ::2])  # c strided
    _refused(a, b, np.zeros((5, 3)).T)  # c Fortran-ordered
    _refused(np.ones((6, 4))[::2], b, np.zeros((3, 5)))  # a strided
    _refused(a, np.ones((4, 10))[:, ::2], np.zeros((3, 5)))  # b strided
    _refused(a, b[::-1], np.zeros((3, 5)))  # negative strides
    frozen = np.zeros((3, 5))
    frozen.flags.writeable = False
    _refused(a, b, frozen)


def test_output_sharing_memory_with_an_input_is_refused() -> None:
    buf = np.ones((4, 4))
    _refused(buf, np.ones((4, 4)), buf)
    _refused(np.ones((4, 4)), buf, buf)
    _refused(buf.T, np.ones((4, 4)), buf)
    halves = np.ones((2, 4, 4))  # two halves of one buffer do not overlap: fine
    assert blas.gemm(halves[0], np.eye(4), halves[1], alpha=2.0)
    np.testing.assert_array_equal(halves[1], 2.0)


def test_no_library_means_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blas, "_STATE", {})
    monkeypatch.setattr(blas, "_loaded_openblas", lambda: iter(()))
    assert not blas.available()
    c = np.zeros((2, 2))
    assert not blas.gemm(np.ones((2, 2)), np.ones((2, 2)), c)
    assert not c.any()


def test_a_library_without_gemm_is_not_bound() -> None:
    libc = ctypes.util.find_library("c")
    assert libc is not None
    assert blas._bind(libc) is None
    assert blas._bind("/nonexistent/libopenblas.so") is None


def test_self_check_rejects_a_gemm_that_computes_nothing() -> None:
    def ignore(*args: Any) -> None:
        return None

    assert not blas._agrees(blas._Gemm(ignore, ignore, ctypes.c_int64))


def test_maps_lines_name_each_openblas_once_even_with_spaces_in_the_path() -> None:
    lines = [
        "7f00-7f10 r--p 00000000 fe:01 42   /opt/my env/numpy.libs/libscipy_openblas64_-ab.so",
        "7f10-7f20 r-xp 00010000 fe:01 42   /opt/my env/numpy.libs/libscipy_openblas64_-ab.so",
        "7f20-7f30 rw-p 00000000 00:00 0 ",
        "7f30-7f40 r-xp 00000000 fe:01 43   /usr/lib/libc.so.6",
        "7ffd-7ffe rw-p 00000000 00:00 0    [stack]",
        "7f40-7f50 r-xp 00000000 fe:01 44   /usr/lib/libopenblas.so.0",
    ]
    assert list(blas.openblas_paths(lines)) == [
        "/opt/my env/numpy.libs/libscipy_openblas64_-ab.so", "/usr/lib/libopenblas.so.0"]


def test_numpys_own_openblas_is_tried_first() -> None:
    paths = ["/tmp/x/libopenblas.so", "/v/site-packages/numpy.libs/libscipy_openblas64_-a.so",
             "/v/site-packages/numpy/core/libopenblas.so",
             "/v/site-packages/numpyfoo/libopenblas.so"]
    assert blas.numpy_first(paths, "/v/site-packages/numpy") == [
        paths[1], paths[2], paths[0], paths[3]]
