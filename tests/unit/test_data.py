"""Default dataset, file loaders (every format and every corrupt variant), split, min-max."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.data.dataset import (
    Dataset,
    MinMax,
    fingerprint,
    load,
    make_default,
    train_val_split,
    validate_labels,
)

# ---- the embedded default ------------------------------------------------------------------


def test_default_is_deterministic_and_seed_dependent() -> None:
    a, b, c = make_default(seed=3, n_samples=500), make_default(seed=3, n_samples=500), \
        make_default(seed=4, n_samples=500)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_default_shape_dtype_and_classes() -> None:
    ds = make_default(seed=0, n_samples=4000)
    assert ds.x.shape == (4000, 48) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and ds.n_classes == 10
    assert np.isfinite(ds.x).all() and np.abs(ds.x).max() <= 1.0
    counts = np.bincount(ds.y, minlength=10)
    assert counts.min() > 300  # roughly balanced


def test_default_needs_a_nonlinear_model() -> None:
    # Least squares on the features (a linear model) against least squares on 1000 fixed random
    # ReLU features (a crude one-hidden-layer net): the gap shows the task is not linear.
    train, val = train_val_split(make_default(seed=0, n_samples=6000), seed=0)
    mm = MinMax.fit(train.x)
    x_train, x_val = mm.transform(train.x, np.float64), mm.transform(val.x, np.float64)
    rng = np.random.default_rng(0)
    proj, shift = 3.0 * rng.standard_normal((48, 1000)), rng.uniform(-1.0, 1.0, 1000)

    def accuracy(features: Callable[[np.ndarray], np.ndarray]) -> float:
        a = np.hstack([features(x_train), np.ones((len(x_train), 1))])
        w, *_ = np.linalg.lstsq(a, np.eye(10)[train.y], rcond=None)
        b = np.hstack([features(x_val), np.ones((len(x_val), 1))])
        return float(np.mean((b @ w).argmax(axis=1) == val.y))

    linear = accuracy(lambda x: x)
    random_relu = accuracy(lambda x: np.maximum((x - 0.5) @ proj + shift, 0.0))
    assert linear < 0.6 and random_relu > linear + 0.3


def test_default_rejects_no_samples() -> None:
    with pytest.raises(UserError):
        make_default(n_samples=0)


# ---- npz -----------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array([0, 2, 1, 2]))
    ds = load(str(path))
    assert np.array_equal(ds.x, x) and ds.x.dtype == np.float64
    assert ds.y.tolist() == [0, 2, 1, 2] and ds.y.dtype == np.int64 and ds.n_classes == 3


def test_npz_images_are_flattened_and_float(tmp_path: Path) -> None:
    path = tmp_path / "img.npz"
    np.savez(path, x=np.zeros((5, 2, 3), np.uint8), y=np.arange(5))
    ds = load(str(path))
    assert ds.x.shape == (5, 6) and ds.x.dtype == np.float32


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 2))}, "no array 'y'"),
    ({"features": np.zeros((3, 2)), "y": np.zeros(3, int)}, "no array 'x'"),
    ({"x": np.array([[0.0, np.nan], [1, 2]]), "y": np.array([0, 1])}, "NaN or inf"),
    ({"x": np.array([[0.0, np.inf], [1, 2]]), "y": np.array([0, 1])}, "NaN or inf"),
    ({"x": np.zeros((2, 2)), "y": np.array([0.0, 1.5])}, "not integers"),
    ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "negative label"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "3 feature rows but 2 labels"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "empty dataset"),
    ({"x": np.zeros(4), "y": np.zeros(4, int)}, "must be 2-D"),
    ({"x": np.array([["a", "b"]]), "y": np.zeros(1, int)}, "not numeric"),
    ({"x": np.zeros((2, 2)), "y": np.array(["a", "b"])}, "not integers"),
])
def test_npz_problems(tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message) as err:
        load(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_npz_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(UserError, match="not a readable .npz"):
        load(str(path))


# ---- csv -----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["", "f1, f2, label\n"])
def test_csv_with_and_without_header(tmp_path: Path, header: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(header + "0.5, 1, 0\n-2, 3e-1, 2\n\n4, 5, 1\n")
    ds = load(str(path))
    assert ds.x.tolist() == [[0.5, 1.0], [-2.0, 0.3], [4.0, 5.0]]
    assert ds.y.tolist() == [0, 2, 1] and ds.n_classes == 3


@pytest.mark.parametrize("text, message", [
    ("1,2,0\n3,4\n", "line 2 has 2 columns, expected 3"),
    ("1,2,0\n3,x,1\n", "line 2: non-numeric value 'x'"),
    ("1,2,0\n3,4,0.5\n", "not integers"),
    ("1,2,0\n3,4,-1\n", "negative label"),
    ("1,nan,0\n", "NaN or inf"),
    ("a,b,label\n", "empty dataset"),
    ("", "empty dataset"),
    ("1\n2\n", "at least one feature column"),
])
def test_csv_problems(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        load(str(path))
    assert str(path) in str(err.value)


def test_csv_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(UserError, match="cannot read csv"):
        load(str(path))


# ---- MNIST idx -----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_pair(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool,
                   stem: str = "train") -> Path:
    ext = ".gz" if gz else ""
    write = (lambda p, b: p.write_bytes(gzip.compress(b, mtime=0))) if gz else \
        (lambda p, b: p.write_bytes(b))
    write(folder / f"{stem}-labels-idx1-ubyte{ext}", idx_bytes(labels))
    path = folder / f"{stem}-images-idx3-ubyte{ext}"
    write(path, idx_bytes(images))
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_pair(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(6, 4, 3), dtype=np.uint8)
    labels = np.array([3, 0, 1, 9, 2, 2], dtype=np.uint8)
    ds = load(str(write_idx_pair(tmp_path, images, labels, gz)))
    assert ds.x.shape == (6, 12) and ds.x.dtype == np.float32
    assert np.array_equal(ds.x, images.reshape(6, 12).astype(np.float32))
    assert ds.y.tolist() == labels.tolist() and ds.n_classes == 10


def test_idx_dotted_name_and_float_images(tmp_path: Path) -> None:
    images = np.arange(8, dtype=">f4").reshape(2, 2, 2)
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(idx_bytes(np.array([1, 0], np.uint8)))
    path = tmp_path / "t10k-images.idx3-ubyte"
    path.write_bytes(idx_bytes(images, type_code=0x0D))
    ds = load(str(path))
    assert ds.x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and ds.y.tolist() == [1, 0]


def test_idx_problems(tmp_path: Path) -> None:
    images = np.zeros((4, 2, 2), np.uint8)
    good = idx_bytes(images)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte"
    cases = {
        b"\x00\x00\x07\x03" + good[4:]: "bad magic number",
        b"\x12\x34\x08\x03" + good[4:]: "bad magic number",
        good[:-3]: "truncated",
        good[:10]: "truncated",
        good + b"\x00": "trailing bytes",
    }
    for raw, message in cases.items():
        path.write_bytes(raw)
        with pytest.raises(UserError, match=message):
            load(str(path))
    path.write_bytes(good)
    labels.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(UserError, match="4 feature rows but 3 labels"):
        load(str(path))
    labels.unlink()
    with pytest.raises(UserError, match="train-labels-idx1-ubyte: no such file"):
        load(str(path))


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    (tmp_path / "a-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(1, "u1"))))
    path = tmp_path / "a-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((1, 2, 2), "u1")))[:-6])
    with pytest.raises(UserError, match="not a readable idx file"):
        load(str(path))


# ---- dispatch ------------------------------------------------------------------------------


def test_missing_directory_and_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load(str(tmp_path / "nope.npz"))
    with pytest.raises(UserError, match="is a directory"):
        load(str(tmp_path))
    other = tmp_path / "data.parquet"
    other.write_text("x")
    with pytest.raises(UserError, match="unsupported file type"):
        load(str(other))


# ---- split, labels, normalisation ----------------------------------------------------------


def test_split_is_seeded_disjoint_and_complete() -> None:
    ds = Dataset(np.arange(100, dtype=np.float32).reshape(50, 2), np.arange(50) % 7, 7)
    train, val = train_val_split(ds, val_fraction=0.2, seed=1)
    again, _ = train_val_split(ds, val_fraction=0.2, seed=1)
    other, _ = train_val_split(ds, val_fraction=0.2, seed=2)
    assert len(train.y) == 40 and len(val.y) == 10
    assert np.array_equal(train.x, again.x) and not np.array_equal(train.x, other.x)
    ids = np.concatenate([train.x[:, 0], val.x[:, 0]]) // 2
    assert sorted(ids.tolist()) == list(range(50))
    assert train.n_classes == val.n_classes == 7
    assert np.array_equal(ds.y[(train.x[:, 0] // 2).astype(int)], train.y)


def test_split_never_leaves_a_part_empty() -> None:
    ds = Dataset(np.zeros((2, 1), np.float32), np.array([0, 1]), 2)
    train, val = train_val_split(ds, val_fraction=0.01)
    assert len(train.y) == len(val.y) == 1
    with pytest.raises(UserError):
        train_val_split(Dataset(ds.x[:1], ds.y[:1], 2))
    with pytest.raises(UserError):
        train_val_split(ds, val_fraction=1.0)


def test_validate_labels() -> None:
    validate_labels(np.array([0, 4, 2]), 5)
    with pytest.raises(UserError, match="labels out of range"):
        validate_labels(np.array([0, 5]), 5)


def test_minmax_fits_train_only_and_handles_constant_columns() -> None:
    train = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0]])
    mm = MinMax.fit(train)
    out = mm.transform(train, np.float64)
    assert out.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    val = mm.transform(np.array([[4.0, 7.0, 2.0]]), np.float32)
    assert val.dtype == np.float32 and val.tolist() == [[2.0, 2.0, 0.5]]  # not clipped
    with pytest.raises(UserError, match="fitted on 3"):
        mm.transform(np.zeros((1, 4)))


def test_minmax_dict_round_trip_is_exact() -> None:
    x = np.random.default_rng(0).standard_normal((20, 5))
    mm = MinMax.fit(x)
    back = MinMax.from_dict(mm.to_dict())
    assert np.array_equal(back.lo, mm.lo) and np.array_equal(back.hi, mm.hi)
    as_arrays = MinMax.from_dict({k: np.asarray(v) for k, v in mm.to_dict().items()})
    assert np.array_equal(as_arrays.transform(x), mm.transform(x))
    with pytest.raises(UserError):
        MinMax.from_dict({"lo": [1.0]})


# ---- hostile sizes and labels: named for what they are, refused before allocating ----------


@pytest.mark.parametrize("y, message", [
    (np.array([0, 2**64 - 1], dtype=np.uint64), "label 18446744073709551615 of sample 1 is too"),
    (np.array([0.0, 1e300]), r"label 1e\+300 of sample 1 is too large"),
    (np.array([0, 1, 2, 10**6] * 50), "only 4 distinct values occur"),
])
def test_huge_or_sparse_labels(tmp_path: Path, y: np.ndarray, message: str) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((len(y), 2)), y=y)
    with pytest.raises(UserError, match=message) as err:
        load(str(path))
    assert "negative" not in str(err.value)


def test_csv_huge_label(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("1,2,0\n3,4,1e300\n")
    with pytest.raises(UserError, match="too large"):
        load(str(path))


def test_dense_labels_beyond_the_small_count_are_fine() -> None:
    from distnet.data.dataset import checked

    y = np.arange(200) % 150
    assert checked(np.zeros((200, 2)), y, "t").n_classes == 150


def test_idx_header_overflow_is_refused_before_reading(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "h-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    path = tmp_path / "h-images-idx3-ubyte"
    # 2^32-1 x 2^32-1 x 2^32-1 overflowed a uint64 product into a negative byte count.
    path.write_bytes(b"\x00\x00\x08\x03" + b"\xff" * 12 + b"\x00" * 8)
    with pytest.raises(UserError, match=r"truncated: 24 bytes, header \(4294967295") as err:
        load(str(path))
    assert "-" not in str(err.value).split("needs")[1]
    gz = tmp_path / "g-images-idx3-ubyte.gz"
    (tmp_path / "g-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(2, "u1"))))
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\xff" * 12))
    with pytest.raises(UserError, match="would need about .* of memory"):
        load(str(gz))


def test_npz_header_claiming_terabytes(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10**7, 10**6)
    with zipfile.ZipFile(path, "w") as z:
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
        with z.open("y.npy", "w") as f:
            np.save(f, np.zeros(3))
    with pytest.raises(UserError, match="would need about 7.45e\\+04 GiB of memory"):
        load(str(path))


def test_memory_budget_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTNET_MEMORY_BUDGET", "1000000")
    with pytest.raises(UserError, match="--samples 10000 would need about"):
        make_default(n_samples=10_000)
    monkeypatch.setenv("DISTNET_MEMORY_BUDGET", "lots")
    with pytest.raises(UserError, match="DISTNET_MEMORY_BUDGET"):
        make_default(n_samples=10)
