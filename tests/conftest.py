"""tests/mpi is collected only inside mpirun (--with-mpi); the driver in tests/drivers starts it."""

from pathlib import Path

import pytest


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name == "mpi" and not config.getoption("with_mpi", default=False):
        return True
    return None
