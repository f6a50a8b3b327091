"""Recovery costs measured by the fault suite, read from the file `tests/faults/measure.py --costs`
writes (docs/recovery-costs.json is the one measured here).

The file holds raw medians at the sizes measured on this machine; the fits that carry them to
other sizes live here, in one place:
- job start (launch, imports, MPI init, data, first step, exit) and ULFM shrink: a + b·log2(ranks)
  — launchers spawn and agreements run over trees, so both grow with the tree depth;
- checkpoint write and load: a + bytes·b (a fixed fsync/open cost plus the bytes at the
  measured disk bandwidth); a checkpoint holds `checkpoint_bytes_per_param_byte` times the
  gradient's bytes (parameters plus optimiser state).

The file is hostile input: every number must be finite, in range, and the lists short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.common.jsonfile import finite, read_json

FORMAT = "distnet-recovery-costs-v1"
MAX_SECONDS = 1e6  # no single recovery action measured on a laptop-sized job takes 11 days
MAX_BYTES = 1e15
MAX_POINTS = 64
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Line:
    """y = intercept + slope * x, both >= 0 (costs never shrink as the job grows)."""

    intercept: float
    slope: float

    def __call__(self, x: float) -> float:
        return self.intercept + self.slope * x


@dataclass(frozen=True)
class RecoveryCosts:
    source: str
    job_start: Line  # over log2(ranks)
    shrink: Line  # over log2(ranks)
    checkpoint_write: Line  # over bytes
    checkpoint_load: Line  # over bytes
    checkpoint_bytes_per_param_byte: float
    detect_deadline_s: float  # a hung or cut-off node is found by the step deadline
    detect_crash_s: float  # a dead process is reported by the runtime

    def job_start_s(self, ranks: int) -> float:
        return self.job_start(math.log2(ranks))

    def shrink_s(self, ranks: int) -> float:
        return self.shrink(math.log2(ranks))

    def checkpoint_s(self, grad_bytes: float) -> float:
        return self.checkpoint_write(grad_bytes * self.checkpoint_bytes_per_param_byte)

    def restart_s(self, ranks: int, grad_bytes: float) -> float:
        """Stop-and-restart's fixed cost: a new job starts and loads the latest checkpoint."""
        return self.job_start_s(ranks) + self.checkpoint_load(
            grad_bytes * self.checkpoint_bytes_per_param_byte)


def fit_line(x: list[float], y: list[float]) -> Line:
    """Least-squares line with intercept and slope kept >= 0 (one point: a constant)."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if len(xs) < 2 or float(np.ptp(xs)) == 0.0:
        return Line(float(np.mean(ys)), 0.0)
    slope, intercept = np.polyfit(xs, ys, 1)
    if slope < 0:
        return Line(float(np.mean(ys)), 0.0)
    if intercept < 0:  # through the origin instead
        return Line(0.0, float(np.dot(xs, ys) / np.dot(xs, xs)))
    return Line(float(intercept), float(slope))


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, str):  # `finite` takes flag text; a measured file holds numbers
        raise UserError(f"{what} must be a number, got {value!r:.40}")
    return finite(value, what, lo, hi)


def _series(doc: dict[str, Any], key: str, xkey: str, xlo: float, xhi: float,
            source: str) -> tuple[list[float], list[float]]:
    entry = doc.get(key)
    if not isinstance(entry, dict):
        raise UserError(f"{source}: {key!r} missing or not an object")
    xs, ys = entry.get(xkey), entry.get("median_s")
    if not isinstance(xs, list) or not isinstance(ys, list) or not xs or len(xs) != len(ys):
        raise UserError(f"{source}: {key}: {xkey!r} and 'median_s' must be lists of the same "
                        f"non-zero length")
    if len(xs) > MAX_POINTS:
        raise UserError(f"{source}: {key}: more than {MAX_POINTS} points")
    return ([_number(v, f"{source}: {key}.{xkey}", xlo, xhi) for v in xs],
            [_number(v, f"{source}: {key}.median_s", 0.0, MAX_SECONDS) for v in ys])


def costs_from_doc(doc: Any, source: str = "costs") -> RecoveryCosts:
    if not isinstance(doc, dict):
        raise UserError(f"{source}: expected a JSON object")
    if doc.get("format") != FORMAT:
        raise UserError(f"{source}: format {doc.get('format')!r:.40}, expected {FORMAT!r} "
                        f"(write it with python -m tests.faults.measure --costs)")
    start_n, start_s = _series(doc, "job_start", "ranks", 1, 1 << 24, source)
    shrink_n, shrink_s = _series(doc, "shrink", "ranks", 2, 1 << 24, source)
    write_b, write_s = _series(doc, "checkpoint_write", "bytes", 0, MAX_BYTES, source)
    load_b, load_s = _series(doc, "checkpoint_load", "bytes", 0, MAX_BYTES, source)
    detect = doc.get("detect")
    if not isinstance(detect, dict):
        raise UserError(f"{source}: 'detect' missing or not an object")
    ratio = _number(doc.get("checkpoint_bytes_per_param_byte"),
                    f"{source}: checkpoint_bytes_per_param_byte", 1.0, 64.0)
    return RecoveryCosts(
        source=source,
        job_start=fit_line([math.log2(n) for n in start_n], start_s),
        shrink=fit_line([math.log2(n) for n in shrink_n], shrink_s),
        checkpoint_write=fit_line(write_b, write_s),
        checkpoint_load=fit_line(load_b, load_s),
        checkpoint_bytes_per_param_byte=ratio,
        detect_deadline_s=_number(detect.get("deadline_s"), f"{source}: detect.deadline_s",
                                  0.0, MAX_SECONDS),
        detect_crash_s=_number(detect.get("crash_s"), f"{source}: detect.crash_s",
                               0.0, MAX_SECONDS),
    )


def load_costs(path: str) -> RecoveryCosts:
    """Read and validate a recovery-cost file; every problem is one UserError line."""
    return costs_from_doc(read_json(path, f"recovery costs {path}", MAX_FILE_BYTES), source=path)
