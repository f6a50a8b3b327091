"""Readers for the supported dataset files: .npz, .csv and MNIST idx (optionally gzipped).

Each reader returns raw (x, y) arrays exactly as stored; `dataset.load` dispatches on the
file name and validates the contents. Every failure is one UserError line naming the file.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib

import numpy as np

from distnet.common.errors import UserError

# idx type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Everything zip, gzip and NumPy raise on a damaged file (checkpoint.py reads .npz too).
READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError)


def is_idx_images(path: str) -> bool:
    name = os.path.basename(path)
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith("idx3-ubyte")


def read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                have = ", ".join(npz.files) or "none"
                raise UserError(f"{path}: .npz has no array {missing[0]!r} (has: {have})")
            return npz["x"], npz["y"]
    except UserError:
        raise
    except READ_ERRORS as e:
        raise UserError(f"{path}: not a readable .npz file ({first_line(e)})") from None


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Numeric comma-separated rows, the last column the label, an optional header row."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(i, line.strip()) for i, line in enumerate(f, start=1)]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read csv ({first_line(e)})") from None
    rows = [(i, line) for i, line in lines if line]
    # A header is a first row with no number in it; a row with only some numbers is bad data.
    if rows and not any(_is_number(c) for c in rows[0][1].split(",")):
        rows = rows[1:]
    if not rows:
        raise UserError(f"{path}: empty dataset (no data rows)")
    try:
        # NumPy's C parser is ~50x faster than Python on MNIST-sized files; its errors are
        # vague, so on failure the rows are re-checked one by one for a precise message.
        table = np.loadtxt([line for _, line in rows], delimiter=",", comments=None,
                           dtype=np.float64, ndmin=2)
    except ValueError:
        _diagnose_csv(path, rows)
        raise UserError(f"{path}: cannot parse csv") from None
    if table.shape[1] < 2:
        raise UserError(f"{path}: csv needs at least one feature column and a label column")
    return table[:, :-1], table[:, -1]


def _diagnose_csv(path: str, rows: list[tuple[int, str]]) -> None:
    width = len(rows[0][1].split(","))
    for i, line in rows:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != width:
            raise UserError(f"{path}: line {i} has {len(cells)} columns, expected {width}")
        bad = next((c for c in cells if not _is_number(c)), None)
        if bad is not None:
            raise UserError(f"{path}: line {i}: non-numeric value {bad!r}")


def read_idx_pair(images_path: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style images (N, rows, cols) and the labels file that sits next to them."""
    labels_path = idx_labels_path(images_path)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim < 2:
        raise UserError(f"{images_path}: idx images must have at least 2 dimensions, got 1")
    if labels.ndim != 1:
        raise UserError(f"{labels_path}: idx labels must have 1 dimension, got {labels.ndim}")
    return images.reshape(len(images), -1), labels


def idx_labels_path(images_path: str) -> str:
    folder, name = os.path.split(images_path)
    for images, labels in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if images in name:
            candidate = os.path.join(folder, name.replace(images, labels))
            # Accept the labels file gzipped or not, whichever way the images come.
            other = candidate[:-3] if candidate.endswith(".gz") else candidate + ".gz"
            if not os.path.exists(candidate) and os.path.exists(other):
                return other
            return candidate
    raise UserError(f"{images_path}: cannot find the labels file (the name must contain "
                    "'images-idx3' so that 'labels-idx1' names the labels)")


def read_idx(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except READ_ERRORS as e:
        raise UserError(f"{path}: not a readable idx file ({first_line(e)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UserError(f"{path}: bad magic number {raw[:4].hex() or 'empty'}: not an idx file")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header_bytes = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_bytes:
        raise UserError(f"{path}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_bytes = header_bytes + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_bytes:
        what = "truncated" if len(raw) < expected_bytes else "has trailing bytes"
        raise UserError(f"{path}: idx file {what}: {len(raw)} bytes, header {shape} needs "
                        f"{expected_bytes}")
    return np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def first_line(e: BaseException) -> str:
    """An exception's message, or its type when it has none, cut to one line."""
    return (str(e) or type(e).__name__).splitlines()[0]
