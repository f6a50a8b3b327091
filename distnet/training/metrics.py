"""Metrics as JSON Lines, written by rank 0 only: one record per line, flushed as it is written.

A flush hands each record to the kernel, so it survives the writer being killed (fault tests
read the file after SIGKILLs); fsync, which only adds protection against the machine itself
going down, runs once at close rather than on every step record of a --profile run.

The output-file rule: a metrics file is a log that runs only ever append to. An existing file
is never truncated (a run that then fails must not have destroyed the previous run's record);
every run ends its part with a "done" record, which is how readers tell runs apart
(`breakdown.split_runs`). A file that exists but is not a metrics file (say, the data) is
refused, and a last line cut short by a killed writer is cut off before appending, so the new
records start on a line of their own.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, TextIO

from distnet.common.errors import UserError

SCHEMA_VERSION = 1
_PROBE_BYTES = 65536


class MetricsWriter:
    """Appends records to a JSONL file; a writer for path None (or a non-zero rank) drops them.

    Any failure to write (a full disk, /dev/full, a vanished folder) is a UserError naming the
    file. `append` is accepted for callers that say so explicitly; a writer always appends.
    """

    def __init__(self, path: str | None, append: bool = True) -> None:
        del append  # the rule above: never truncate
        self._file: TextIO | None = None
        self.path = path
        if not path:
            return
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            prepare_for_append(path)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UserError(f"--metrics {path}: cannot open: {exc.strerror or exc}") from None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps({"schema": SCHEMA_VERSION, **record}) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            self._abandon()
            raise UserError(f"--metrics {self.path}: cannot write: {exc.strerror or exc}"
                            ) from None

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            if stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self._abandon()
            raise UserError(f"--metrics {self.path}: cannot write: {exc.strerror or exc}"
                            ) from None
        self._file = None

    def _abandon(self) -> None:
        """Drop a broken file without a second error from close's flush of buffered data."""
        f, self._file = self._file, None
        if f is not None:
            try:
                os.close(f.fileno())
            except OSError:
                pass


def prepare_for_append(path: str) -> None:
    """Refuse a file that is not a metrics log; cut a last line left half-written by a kill."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"--metrics {path}: is a directory, expected a file name")
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return  # /dev/null, a pipe, an empty file: nothing to keep intact
    with open(path, "rb+") as f:
        first = f.readline(_PROBE_BYTES)
        if not _is_record(first):
            raise UserError(f"--metrics {path}: exists and is not a distnet metrics file "
                            "(runs only append to metrics files; choose another name)")
        f.seek(max(0, st.st_size - _PROBE_BYTES))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and st.st_size > _PROBE_BYTES:
            raise UserError(f"--metrics {path}: its last line is longer than "
                            f"{_PROBE_BYTES} bytes: not a metrics file")
        # Bytes after the last newline are a record a killed writer did not finish.
        f.truncate(max(0, st.st_size - len(tail) + cut + 1))


def _is_record(line: bytes) -> bool:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(rec, dict) and "schema" in rec


def read_metrics(path: str) -> list[dict[str, Any]]:
    """All records of a metrics file, in order (used by tests and by distnet.whatif).

    Raises ValueError naming the line for damage (a last line cut short by a killed writer,
    after good records, is dropped instead).
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            if i == 0 or i < len(lines) - 1 or line.endswith("\n"):
                raise ValueError(f"line {i + 1} is not a JSON record") from None
            continue  # good records, then a last line cut short: the writer was killed
        if not isinstance(rec, dict):
            raise ValueError(f"line {i + 1} is not a JSON object")
        records.append(rec)
    return records
