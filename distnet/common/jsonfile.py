"""Read a user's JSON file (fault plan, tune table, custom network, bench records) safely.

json.load alone lets hostile files through: `NaN`/`Infinity` literals and numbers like 1e400
(which decode to inf) reach arithmetic that then loops or overflows, `[[[[...` 100k deep raises
RecursionError, a 5000-digit integer raises ValueError, and a huge file is read whole. Here each
of those is one UserError line naming the file.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from distnet.common.errors import UserError

MAX_JSON_BYTES = 16 << 20  # far above any plan, table or network a person writes by hand


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def loads(text: str, where: str) -> Any:
    """Decode JSON text; non-finite numbers, too deep nesting and huge integers are refused."""
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # from the hooks above, or int() of a 5000-digit number
        msg = str(exc).splitlines()[0] if str(exc) else "bad number"
        raise UserError(f"{where}: not valid JSON ({msg})") from None


def read_json(path: str, where: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and decode the JSON file at path; `where` starts every error line."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise UserError(f"{where}: file of {size:,} bytes is larger than the "
                            f"{max_bytes:,} bytes allowed")
        with open(path, encoding="utf-8") as f:
            text = f.read(max_bytes + 1)
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not valid JSON (not UTF-8 text)") from None
    if len(text) > max_bytes:  # a file that grew, or a device such as /dev/zero
        raise UserError(f"{where}: larger than the {max_bytes:,} bytes allowed")
    return loads(text, where)


def finite(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    """A number from decoded JSON (or a flag) as a finite float in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise UserError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise UserError(f"{where} must be in {span}, got {value!r}")
    return number
