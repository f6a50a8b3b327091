"""Checkpoints: bit-exact round trips, crash safety, corruption detection, latest and prune."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distnet.common.errors import UserError
from distnet.training import checkpoint
from tests.proc import run


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(50)
    return {
        "params": flat[10:40],  # a view into a larger buffer, as the trainer saves it
        "opt/m": rng.standard_normal((3, 4)).astype(np.float32),
        "opt/step": np.array(17),
        "scaler/lo": np.array([-np.inf, np.nan, 1e-300]),
        "ids": np.arange(5, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
    }


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    arrays = sample_arrays()
    meta = {"kind": "distnet-checkpoint", "progress": {"epoch": 2, "pos": 640},
            "rng": [{"state": 2**100 + 1}, [1, 2.5, None]], "loss": np.float32(0.25),
            "step": np.int64(9), "name": "ünïcode"}
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, arrays, meta)
    back, back_meta = checkpoint.load(path)
    assert set(back) == set(arrays)
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype and back[k].shape == a.shape
        assert back[k].tobytes() == a.tobytes()
    assert back_meta == {**meta, "loss": 0.25, "step": 9}


def test_save_creates_folder_and_overwrites(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "dir" / "c.npz")
    checkpoint.save(path, {"a": np.zeros(2)}, {"v": 1})
    checkpoint.save(path, {"a": np.ones(2)}, {"v": 2})
    arrays, meta = checkpoint.load(path)
    assert arrays["a"].tolist() == [1.0, 1.0] and meta == {"v": 2}
    assert os.listdir(os.path.dirname(path)) == ["c.npz"]  # no temp file left behind


def test_reserved_names_refused(tmp_path: Path) -> None:
    for name in ("__meta__", "file", ""):
        with pytest.raises(ValueError):
            checkpoint.save(str(tmp_path / "c.npz"), {name: np.zeros(1)}, {})


def test_failed_write_keeps_the_old_checkpoint(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, {"a": np.zeros(3)}, {"v": "old"})

    def crash(*_: object) -> None:
        raise KeyboardInterrupt  # as if the process were interrupted just before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"a": np.ones(3)}, {"v": "new"})
    monkeypatch.undo()
    assert checkpoint.load(path)[1] == {"v": "old"}
    assert os.listdir(tmp_path) == ["c.npz"]


@pytest.mark.parametrize("die_in", ["fsync", "replace"])
def test_process_killed_mid_write(tmp_path: Path, die_in: str) -> None:
    # A real SIGKILL at a chosen point of save (no cleanup code runs): while the temp file is
    # being made durable, or just before the rename. The old checkpoint must stay the latest.
    folder = str(tmp_path)
    checkpoint.save(checkpoint.checkpoint_path(folder, 1), {"w": np.zeros(3)}, {"v": "old"})
    child = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from distnet.training import checkpoint
        os.{die_in} = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.save(checkpoint.checkpoint_path({folder!r}, 2), {{"w": np.ones(10**5)}}, {{}})
    """)
    res = run([sys.executable, "-c", child], timeout_s=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    leftovers = [n for n in os.listdir(folder) if n.startswith(checkpoint.TMP_PREFIX)]
    assert len(leftovers) == 1  # the crash did leave its temp file behind
    latest = checkpoint.latest(folder)
    assert latest == checkpoint.checkpoint_path(folder, 1)
    assert checkpoint.load(latest)[1] == {"v": "old"}
    checkpoint.prune(folder, keep=3)
    assert os.listdir(folder) == ["ckpt-000000001.npz"]  # the leftover is cleaned up


def test_latest_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint.save(checkpoint.checkpoint_path("", 3), {"w": np.zeros(1)}, {})
    assert checkpoint.latest("") == "ckpt-000000003.npz"


def test_latest_picks_highest_complete_step(tmp_path: Path) -> None:
    folder = str(tmp_path)
    assert checkpoint.latest(folder) is None
    assert checkpoint.latest(str(tmp_path / "missing")) is None
    for step in (5, 120, 40):
        checkpoint.save(checkpoint.checkpoint_path(folder, step), {"w": np.full(2, step)}, {})
    good = checkpoint.checkpoint_path(folder, 120)
    assert checkpoint.latest(folder) == good
    # A crash mid-write leaves a temp file (any content) and a copy can leave a torn file.
    full = Path(good).read_bytes()
    (tmp_path / f"{checkpoint.TMP_PREFIX}abc123.npz").write_bytes(full[: len(full) // 2])
    Path(checkpoint.checkpoint_path(folder, 200)).write_bytes(full[: len(full) // 2])
    Path(checkpoint.checkpoint_path(folder, 300)).write_bytes(b"")
    (tmp_path / "ckpt-notanumber.npz").write_bytes(full)
    assert checkpoint.latest(folder) == good
    assert checkpoint.load(good)[0]["w"].tolist() == [120, 120]


def test_checkpoint_path_sorts_like_steps(tmp_path: Path) -> None:
    names = [os.path.basename(checkpoint.checkpoint_path(str(tmp_path), s)) for s in (9, 10, 100)]
    assert names == sorted(names)


def test_truncated_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    checkpoint.save(str(path), sample_arrays(), {"a": 1})
    full = path.read_bytes()
    for cut in (0, 10, len(full) // 3, len(full) - 1):
        path.write_bytes(full[:cut])
        with pytest.raises(UserError, match="unreadable, truncated or corrupt") as err:
            checkpoint.load(str(path))
        assert "\n" not in str(err.value)


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    arrays = {"w": np.arange(1000, dtype=np.float64)}
    checkpoint.save(str(path), arrays, {"a": 1})
    raw = bytearray(path.read_bytes())
    raw[raw.find(arrays["w"][500].tobytes())] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt"):
        checkpoint.load(str(path))


def test_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    # Damage that keeps the zip consistent (members rewritten with fresh CRCs).
    path = tmp_path / "c.npz"
    checkpoint.save(str(path), {"w": np.zeros(4)}, {"a": 1})
    with np.load(path) as npz:
        members = {k: npz[k] for k in npz.files}
    members["w"] = np.ones(4)
    with open(path, "wb") as f:
        np.savez(f, **members)
    with pytest.raises(UserError, match="checksum mismatch"):
        checkpoint.load(str(path))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(2))
    with pytest.raises(UserError, match="not a distnet checkpoint"):
        checkpoint.load(str(plain))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello, not a zip")
    with pytest.raises(UserError, match="unreadable"):
        checkpoint.load(str(junk))
    with pytest.raises(UserError, match="no such file"):
        checkpoint.load(str(tmp_path / "missing.npz"))
    with pytest.raises(UserError, match="is a directory"):
        checkpoint.load(str(tmp_path))


def test_prune_keeps_newest_intact(tmp_path: Path) -> None:
    folder = str(tmp_path)
    for step in range(1, 6):
        checkpoint.save(checkpoint.checkpoint_path(folder, step), {"w": np.zeros(1)}, {})
    checkpoint.prune(folder, keep=2)
    assert sorted(os.listdir(folder)) == ["ckpt-000000004.npz", "ckpt-000000005.npz"]
    # A damaged newest file must not count as kept, or the last good one would be deleted.
    Path(checkpoint.checkpoint_path(folder, 9)).write_bytes(b"torn")
    checkpoint.prune(folder, keep=1)
    assert sorted(os.listdir(folder)) == ["ckpt-000000005.npz", "ckpt-000000009.npz"]
    assert checkpoint.latest(folder) == checkpoint.checkpoint_path(folder, 5)
    with pytest.raises(UserError):
        checkpoint.prune(folder, keep=0)


# ---- never silent about damage; a folder has one writer ------------------------------------


def _save_steps(folder: Path, *steps: int) -> list[str]:
    paths = [checkpoint.checkpoint_path(str(folder), s) for s in steps]
    for s, p in zip(steps, paths, strict=True):
        checkpoint.save(p, {"a": np.full(3, float(s))}, {"step": s})
    return paths


def _damage_file(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def test_resume_point_names_a_damaged_newest_and_its_fallback(tmp_path: Path) -> None:
    old, new = _save_steps(tmp_path, 3, 6)
    assert checkpoint.resume_point(str(tmp_path)) == (new, [])
    _damage_file(new)
    path, notes = checkpoint.resume_point(str(tmp_path))
    assert path == old and len(notes) == 1
    assert notes[0].startswith(f"checkpoint {new} is damaged (")
    assert f"resuming from {old}" in notes[0]


def test_resume_point_only_damaged_is_not_no_checkpoint(tmp_path: Path) -> None:
    (only,) = _save_steps(tmp_path, 4)
    _damage_file(only)
    with pytest.raises(UserError, match=f"checkpoint {only} is damaged") as err:
        checkpoint.resume_point(str(tmp_path))
    assert "no intact checkpoint" in str(err.value)
    with pytest.raises(UserError, match="no checkpoint in"):
        checkpoint.resume_point(str(tmp_path / "empty"))


def test_directory_named_like_a_checkpoint(tmp_path: Path) -> None:
    (good,) = _save_steps(tmp_path, 2)
    fake = Path(checkpoint.checkpoint_path(str(tmp_path), 9))
    fake.mkdir()
    (fake / "keep.txt").write_text("mine")
    path, notes = checkpoint.resume_point(str(tmp_path))
    assert path == good and "is a directory" in notes[0]
    _save_steps(tmp_path, 3, 4, 5)
    checkpoint.prune(str(tmp_path), keep=1)  # no IsADirectoryError; the folder is left alone
    assert (fake / "keep.txt").read_text() == "mine"


def test_dir_lock_refuses_a_second_holder_and_names_the_pid(tmp_path: Path) -> None:
    first = checkpoint.DirLock(str(tmp_path / "ck"))
    with pytest.raises(UserError, match=f"in use by another job \\(pid {os.getpid()} holds"):
        checkpoint.DirLock(str(tmp_path / "ck"))
    first.release()
    checkpoint.DirLock(str(tmp_path / "ck")).release()  # free again once released


def test_dir_lock_is_dropped_when_the_holder_dies(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    script = ("import os, signal, sys\n"
              "from distnet.training import checkpoint\n"
              f"checkpoint.DirLock({str(folder)!r})\n"
              "print(os.getpid(), flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    res = run([sys.executable, "-c", script], timeout_s=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    checkpoint.DirLock(str(folder)).release()  # a dead holder's lock file blocks nothing
