"""The output-file rule's first half: an output never aliases an input (or another output).

`--metrics data.npz` or `--save data.npz` once overwrote the data they were about to read. Two
names are the same file when their resolved paths match (symlinks, `..`, relative names) or,
for files that exist, when device and inode match (hard links, bind mounts).
"""

from __future__ import annotations

import os

from distnet.common.errors import UserError


def same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False  # one does not exist yet: the resolved paths already differ
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_no_alias(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Refuse an output (flag -> path) that names an input or another output's file."""
    named_in = [(flag, path) for flag, path in inputs.items() if path]
    named_out = [(flag, path) for flag, path in outputs.items() if path]
    for i, (flag, path) in enumerate(named_out):
        for other_flag, other in named_in:
            if same_file(path, other):
                raise UserError(f"{flag} {path} is the same file as the input {other_flag} "
                                f"{other}: a run never writes over its input")
        for other_flag, other in named_out[:i]:
            if same_file(path, other):
                raise UserError(f"{flag} {path} and {other_flag} {other} are the same file")


def write_text_atomic(path: str, text: str, flag: str) -> None:
    """The rule's second half for files written in one go: a complete new file replaces the
    old one (write aside in the same folder, then rename), or the old one stays as it was."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None
