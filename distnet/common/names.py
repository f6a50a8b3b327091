"""Looking a name up in one of the project's explicit tables (algorithms, compressors, losses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from distnet.common.errors import UserError

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """table[name]; an unknown name is one UserError line listing the known ones."""
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise UserError(f"unknown {what} {name!r} (known: {known})") from None
