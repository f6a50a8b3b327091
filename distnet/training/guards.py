"""Checks a training run makes around the trainer so that no run destroys a user's file.

Before the run (every rank agrees on the outcome): no output names an input or another output
(resolved paths and inodes, `common/outputs.py`); `--save`'s folder accepts a new file (tried,
not asked: as root `os.access` says yes to almost anything); the checkpoint folder is locked
(`checkpoint.DirLock`, rank 0 holds it for the whole run); a resume names any damaged newer
checkpoint and the one it falls back to, refuses a checkpoint folder with nothing intact, and
refuses a checkpoint written with another --seed (its position indexes another permutation).
After the trainer has resumed: a position beyond this run's epoch (the data changed) is refused.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from distnet.common.errors import UserError
from distnet.common.outputs import check_no_alias
from distnet.data.files import idx_labels_path, is_idx_images
from distnet.training import checkpoint
from distnet.training.config import TrainConfig


def inputs_of(cfg: TrainConfig) -> dict[str, str | None]:
    found: dict[str, str | None] = {"--data": cfg.data, "--fault-plan": cfg.fault_plan}
    if cfg.data and is_idx_images(cfg.data):
        try:
            found["--data (labels)"] = idx_labels_path(cfg.data)
        except UserError:
            pass  # load() reports the missing labels file itself
    return found


def probe_writable(flag: str, path: str) -> None:
    """Create (and remove) a file beside `path`, as the final write will."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot create a file in {folder}: "
                        f"{exc.strerror or exc}") from None


def before_run(cfg: TrainConfig, rank: int) -> checkpoint.DirLock | None:
    """The checks above that need no data; returns rank 0's checkpoint-folder lock."""
    check_no_alias({"--metrics": cfg.metrics, "--save": cfg.save}, inputs_of(cfg))
    if cfg.trials and (cfg.save or cfg.checkpoint_dir or cfg.resume):
        raise UserError("--trials (random search) runs fresh trials: --save, --checkpoint-dir "
                        "and --resume do not apply; --metrics gets every trial's records")
    if cfg.save and rank == 0:
        probe_writable("--save", cfg.save)
    if cfg.resume and cfg.checkpoint_dir:
        path, notes = checkpoint.resume_point(cfg.checkpoint_dir)
        meta = checkpoint.load(path)[1]
        if "seed" in meta and meta["seed"] != cfg.seed:
            raise UserError(f"{path} was written with --seed {meta['seed']}, this run has "
                            f"--seed {cfg.seed}: its position belongs to another permutation "
                            "(resume with the same --seed)")
        if rank == 0:
            for note in notes:
                print(f"distnet: warning: {note}", file=sys.stderr, flush=True)
    if cfg.checkpoint_dir and rank == 0:
        return checkpoint.DirLock(cfg.checkpoint_dir)
    return None


def after_resume(trainer: Any) -> None:
    """A resumed position must lie inside this run's epoch."""
    n_train = len(trainer.data.y_train)
    pos = trainer.progress.pos
    if trainer.cfg.resume and pos > n_train:
        raise UserError(f"the checkpoint's position {pos} is beyond this run's epoch of "
                        f"{n_train} training samples: the data changed since the checkpoint")
