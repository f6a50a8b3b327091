"""The explicit registry of gradient compressors: name -> factory, no magic discovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distnet.common.names import lookup

# factory(grads, tensors, ranges, **options) -> a Compressor (see distnet.compress.base).
CompressorFactory = Callable[..., Any]

COMPRESSORS: dict[str, CompressorFactory] = {}


def register(name: str, factory: CompressorFactory) -> CompressorFactory:
    """Add a compressor; duplicate names are refused."""
    if name in COMPRESSORS:
        raise ValueError(f"compressor {name!r} is already registered")
    COMPRESSORS[name] = factory
    return factory


def get(name: str) -> CompressorFactory:
    """The factory called `name`; an unknown name is a UserError listing the known ones."""
    return lookup(COMPRESSORS, name, "compressor")
