"""Metrics as JSON Lines, written by rank 0 only: one record per line, flushed as it is written.

A flush hands each record to the kernel, so it survives the writer being killed (fault tests
read the file after SIGKILLs); fsync, which only adds protection against the machine itself
going down, runs once at close rather than on every step record of a --profile run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

SCHEMA_VERSION = 1


class MetricsWriter:
    """Appends records to a JSONL file; a writer for path None (or a non-zero rank) drops them."""

    def __init__(self, path: str | None, append: bool = False) -> None:
        self._file: TextIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"schema": SCHEMA_VERSION, **record}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def read_metrics(path: str) -> list[dict[str, Any]]:
    """All records of a metrics file, in order (used by tests and by distnet.whatif)."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == 0 or i < len(lines) - 1:
                raise  # not a metrics file, or damaged in the middle
            # Good records, then a last line cut short: the writer was killed mid-line.
    return records
