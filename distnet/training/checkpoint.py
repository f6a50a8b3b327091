"""Atomic, self-checking checkpoints: an uncompressed .npz of named arrays plus JSON metadata.

A crash can happen at any byte of a write. `save` therefore writes a temporary file in the same
directory, fsyncs it, renames it over the target (atomic on POSIX) and fsyncs the directory so
the rename itself survives a power loss; readers see the old checkpoint or the new one, never
half of one. A SHA-256 over every array's name, dtype, shape and bytes plus the metadata is
stored inside, so damage that slips past the zip CRCs is still caught on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from typing import Any

import numpy as np

from distnet.common.errors import UserError
from distnet.data.files import READ_ERRORS, first_line

META_KEY = "__meta__"
CHECKSUM_KEY = "__sha256__"
FORMAT_KEY = "__format__"
FORMAT = "distnet-checkpoint-v1"
TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
_NAME = re.compile(r"^ckpt-(\d+)\.npz$")


def save(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays and meta to path atomically (all or nothing, even if the process dies)."""
    for name in arrays:
        # np.savez takes the names as keyword arguments next to its own `file` and `allow_pickle`.
        if not name or name.startswith("__") or name in ("file", "allow_pickle"):
            raise ValueError(f"checkpoint array name {name!r} is empty or reserved")
    # order="C", not ascontiguousarray: that one turns 0-d arrays (optimizer step counts) into 1-d.
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    meta_json = json.dumps(meta, sort_keys=True, default=_json_default)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".npz", dir=folder)
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            payload: dict[str, Any] = {
                **arrays, META_KEY: np.array(meta_json), FORMAT_KEY: np.array(FORMAT),
                CHECKSUM_KEY: np.array(_digest(arrays, meta_json)),
            }
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary output file
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk or a vanished folder: one line, not a traceback
            raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise
    _fsync_dir(folder)


def load(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint written by save; any problem is one UserError line."""
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path}: is a directory, not a checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not {META_KEY, CHECKSUM_KEY, FORMAT_KEY} <= set(npz.files):
                raise UserError(f"checkpoint {path}: not a distnet checkpoint (no metadata)")
            fmt, meta_json = str(npz[FORMAT_KEY]), str(npz[META_KEY])
            stored_digest = str(npz[CHECKSUM_KEY])
            arrays = {k: npz[k] for k in npz.files if not k.startswith("__")}
    except UserError:
        raise
    except READ_ERRORS as e:
        raise UserError(f"checkpoint {path}: unreadable, truncated or corrupt ({first_line(e)})"
                        ) from None
    if fmt != FORMAT:
        raise UserError(f"checkpoint {path}: unknown format {fmt!r} (expected {FORMAT!r})")
    if _digest(arrays, meta_json) != stored_digest:
        raise UserError(f"checkpoint {path}: checksum mismatch, the file is corrupt")
    return arrays, json.loads(meta_json)


def checkpoint_path(folder: str, step: int) -> str:
    """Zero-padded so that names sort like steps."""
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return os.path.join(folder, f"ckpt-{step:09d}.npz")


def latest(folder: str) -> str | None:
    """The complete, intact checkpoint with the highest step, or None if there is none.

    Temporary files from a crash mid-write never match; a damaged file at a checkpoint name
    (say, copied half-way) is skipped in favour of the previous good one.
    """
    for _, path in _by_step_newest_first(folder):
        if _damage(path) is None:
            return path
    return None


def resume_point(folder: str) -> tuple[str, list[str]]:
    """(the checkpoint to resume from, one note per newer checkpoint that had to be skipped).

    Never silent: a damaged newest checkpoint is named with what is wrong and the older one
    used instead; when nothing intact is left the UserError says which files are damaged,
    not that there is no checkpoint.
    """
    skipped: list[tuple[str, str]] = []
    for _, path in _by_step_newest_first(folder):
        damage = _damage(path)
        if damage is None:
            notes = [f"checkpoint {bad} is damaged ({why}); resuming from {path}"
                     for bad, why in skipped]
            return path, notes
        skipped.append((path, damage))
    if skipped:
        bad, why = skipped[0]
        more = f" (and {len(skipped) - 1} older one(s))" if len(skipped) > 1 else ""
        raise UserError(f"--resume: checkpoint {bad} is damaged ({why}){more}; "
                        f"no intact checkpoint in {folder}")
    raise UserError(f"--resume: no checkpoint in {folder}")


def prune(folder: str, keep: int) -> None:
    """Delete all but the `keep` newest intact checkpoints, and temp files left by crashes.

    Damaged files newer than the kept ones are left alone (they cost a kept slot nothing), and
    so is anything that is not a regular file (a folder named like a checkpoint is not ours).
    Call it from the one process that saves, holding the folder's lock, after its save: any
    temp file then is a crash leftover.
    """
    if keep < 1:
        raise UserError(f"must keep at least 1 checkpoint, got {keep}")
    kept = 0
    for _, path in _by_step_newest_first(folder):
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        if kept >= keep:
            _unlink_quietly(path)
        elif _damage(path) is None:
            kept += 1
    where = folder or "."
    for name in os.listdir(where) if os.path.isdir(where) else []:
        path = os.path.join(where, name)
        if name.startswith(TMP_PREFIX) and name.endswith(".npz") and os.path.isfile(path):
            _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # already gone: nothing to do


class DirLock:
    """An advisory lock (fcntl.flock) on a checkpoint folder, held for the life of the job.

    Two jobs writing one folder would prune each other's checkpoints; the second one to start
    gets a UserError naming the holder's pid. The kernel drops the lock when the holder dies,
    however it dies, so a stale lock file never blocks a restart.
    """

    def __init__(self, folder: str) -> None:
        import fcntl

        self.path = os.path.join(folder or ".", LOCK_NAME)
        try:
            os.makedirs(folder or ".", exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"--checkpoint-dir {folder}: cannot create {self.path}: "
                            f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise UserError(f"--checkpoint-dir {folder} is in use by another job (pid "
                            f"{holder} holds the lock {self.path})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _by_step_newest_first(folder: str) -> list[tuple[int, str]]:
    where = folder or "."  # checkpoint_path("", step) names a file in the working directory
    if not os.path.isdir(where):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name))
             for name in os.listdir(where) if (m := _NAME.match(name))]
    return sorted(found, reverse=True)


def _damage(path: str) -> str | None:
    """What is wrong with the checkpoint at path, or None if it loads and checks out."""
    try:
        load(path)
    except UserError as exc:
        return str(exc).removeprefix(f"checkpoint {path}: ")
    return None


def _digest(arrays: dict[str, np.ndarray], meta_json: str) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name], order="C")
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    h.update(meta_json.encode())
    return h.hexdigest()


def _json_default(value: Any) -> Any:
    """NumPy scalars and small arrays in meta (steps, losses, RNG states) become plain JSON."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    kind = type(value).__name__
    raise TypeError(f"checkpoint meta value of type {kind} is not JSON-serialisable")


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
