"""`python -m distnet.bench [train|overlap] ...`: dispatch to a benchmark; all-reduce by default.

    mpirun -n 2 python -m distnet.bench --sizes 4KiB,1MiB   # all-reduce (bench/report.py, sweep.py)
    mpirun -n 2 python -m distnet.bench overlap --steps 20  # bucketing overlap on vs off
    mpirun -n 2 python -m distnet.bench train ...           # training throughput (training.py)
    topology emulate run -n 4 -- python -m distnet.bench emulated --out t.json  # (emulated.py)
    python -m distnet.bench compression --ranks 4           # accuracy per --compress
"""

import os
import sys


def main(argv: list[str]) -> int:
    # One BLAS thread per rank: ranks already fill the cores, more threads only oversubscribe.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if argv and argv[0] == "train":
        from distnet.bench.training import main as train_main

        return int(train_main(argv[1:]) or 0)
    if argv and argv[0] == "overlap":
        from distnet.bench.overlap import main as overlap_main

        return overlap_main(argv[1:])
    if argv and argv[0] == "compression":
        from distnet.bench.compression import main as compression_main

        return compression_main(argv[1:])
    if argv and argv[0] == "emulated":
        from distnet.bench.emulated import main as emulated_main

        return emulated_main(argv[1:])
    from distnet.bench.report import main as allreduce_main

    return allreduce_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
