"""`python -m distnet.train`: train the MLP data-parallel over every rank of MPI_COMM_WORLD.

    mpirun -n 8 python -m distnet.train --epochs 5 --allreduce ring --metrics run.jsonl
"""

from __future__ import annotations

import sys

from distnet.common.threads import limit_blas_threads

limit_blas_threads()  # before NumPy loads BLAS

from typing import Any  # noqa: E402

from distnet.common.errors import UserError  # noqa: E402

PROG = "python -m distnet.train"


def main_with_comm(comm: Any, argv: list[str] | None = None) -> int:
    from distnet.common.runner import AgreedError, agree
    from distnet.training import guards
    from distnet.training.trainer import Trainer

    cfg = agree(comm, lambda: parse_quietly(comm, argv))
    lock = agree(comm, lambda: guards.before_run(cfg, comm.Get_rank()))
    try:
        if cfg.trials:
            from distnet.search import random_search

            random_search(comm, cfg)
            return 0
        trainer: Trainer
        if cfg.ft != "none" or cfg.fault_plan or cfg.inject or cfg.track_samples:
            from distnet.ft.resilient import FaultTolerantTrainer

            trainer = FaultTolerantTrainer(comm, cfg)
        else:
            trainer = Trainer(comm, cfg)
        try:
            guards.after_resume(trainer)  # every rank resumed the same checkpoint: agreed
        except UserError as exc:
            raise AgreedError(str(exc)) from None
        trainer.fit()
    finally:
        if lock is not None:
            lock.release()
    return 0


def parse_quietly(comm: Any, argv: list[str] | None) -> Any:
    """parse_args with --help (and argparse's own output) printed by rank 0 only."""
    import contextlib
    import io

    from distnet.training.config import parse_args

    quiet = comm.Get_rank() != 0
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        cfg, _ = parse_args(argv)
    return cfg


def main(argv: list[str] | None = None) -> int:
    from distnet.common.runner import run

    return run(lambda comm: main_with_comm(comm, argv), PROG)


if __name__ == "__main__":
    sys.exit(main())
