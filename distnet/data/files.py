"""Readers for the supported dataset files: .npz, .csv and MNIST idx (optionally gzipped).

Each reader returns raw (x, y) arrays exactly as stored; `dataset.load` dispatches on the
file name and validates the contents. Every failure is one UserError line naming the file.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.memory import check_fits

# idx type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Everything zip, gzip and NumPy raise on a damaged file (checkpoint.py reads .npz too).
READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError,
               NotImplementedError)  # zipfile: "zip file version 7.8" of a damaged header


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
            # NumPy allocates what an array's header claims before reading its bytes, so a
            # small (or compressed) file can ask for terabytes: check the headers first.
            check_fits(f"{path}: the arrays x and y",
                       sum(npz_array_bytes(npz, k) for k in ("x", "y")))
            return npz["x"], npz["y"]
    except UserError:
        raise
    except READ_ERRORS as e:
        raise UserError(f"{path}: not a readable .npz file ({first_line(e)})") from None


def npz_array_bytes(npz: Any, name: str) -> int:
    """Bytes the array `name` of an open NpzFile will take, from its .npy header alone."""
    with npz.zip.open(name + ".npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    count = 1
    for d in shape:
        count *= int(d)  # Python ints: a header's dimensions cannot overflow
    return count * np.dtype(dtype).itemsize


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Numeric comma-separated rows, the last column the label, an optional header row."""
    try:
        # Python keeps every line as a str and NumPy parses a copy: ~6x the file in memory.
        check_fits(f"{path}: parsing this csv", 6 * os.path.getsize(path))
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
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_DTYPES:
                raise UserError(f"{path}: bad magic number {magic.hex() or 'empty'}: "
                                "not an idx file")
            dtype, ndim = np.dtype(IDX_DTYPES[magic[2]]), magic[3]
            dims = f.read(4 * ndim)
            if ndim == 0 or len(dims) < 4 * ndim:
                raise UserError(f"{path}: truncated idx header")
            # Python ints: 2^32-sized dimensions multiply without overflowing to a negative.
            shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
            count = 1
            for d in shape:
                count *= d
            header_bytes, data_bytes = 4 + 4 * ndim, count * dtype.itemsize
            expected_bytes = header_bytes + data_bytes
            if opener is open and os.path.getsize(path) != expected_bytes:
                _wrong_size(path, os.path.getsize(path), shape, expected_bytes)
            check_fits(f"{path}: idx data of shape {shape}", data_bytes)
            raw = f.read(data_bytes + 1)  # one byte more reveals trailing data
    except UserError:
        raise
    except READ_ERRORS as e:
        raise UserError(f"{path}: not a readable idx file ({first_line(e)})") from None
    if len(raw) != data_bytes:
        _wrong_size(path, header_bytes + len(raw), shape, expected_bytes,
                    more=len(raw) > data_bytes)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _wrong_size(path: str, size: int, shape: tuple[int, ...], expected: int,
                more: bool | None = None) -> None:
    trailing = size > expected if more is None else more
    what = "has trailing bytes" if trailing else "truncated"
    got = f"more than {expected}" if more else str(size)
    raise UserError(f"{path}: idx file {what}: {got} bytes, header {shape} needs {expected}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def first_line(e: BaseException) -> str:
    """An exception's message, or its type when it has none, cut to one line."""
    return (str(e) or type(e).__name__).splitlines()[0]
