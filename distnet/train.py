"""`python -m distnet.train`: train the MLP data-parallel over every rank of MPI_COMM_WORLD.

    mpirun -n 8 python -m distnet.train --epochs 5 --allreduce ring --metrics run.jsonl
"""

from __future__ import annotations

import sys

from distnet.common.threads import limit_blas_threads

limit_blas_threads()  # before NumPy loads BLAS

from typing import Any  # noqa: E402

PROG = "python -m distnet.train"


def main_with_comm(comm: Any, argv: list[str] | None = None) -> int:
    from distnet.common.runner import agree
    from distnet.training.config import parse_args
    from distnet.training.trainer import Trainer

    cfg, _ = agree(comm, lambda: parse_args(argv))
    if cfg.trials:
        from distnet.search import random_search

        random_search(comm, cfg)
        return 0
    if cfg.ft != "none" or cfg.fault_plan or cfg.inject or cfg.track_samples:
        from distnet.ft.resilient import FaultTolerantTrainer

        FaultTolerantTrainer(comm, cfg).fit()
    else:
        Trainer(comm, cfg).fit()
    return 0


def main(argv: list[str] | None = None) -> int:
    from distnet.common.runner import run

    return run(lambda comm: main_with_comm(comm, argv), PROG)


if __name__ == "__main__":
    sys.exit(main())
