"""Fault-free reference runs, one per world size, shared by every scenario of the session."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.harness import WORLD, Run, train


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Run]:
    """n -> the run with the scenarios' seed and flags on n ranks, no fault, ULFM on."""
    cache: dict[int, Run] = {}

    def get(n: int) -> Run:
        if n not in cache:
            run = train(tmp_path_factory.mktemp(f"reference{n}"), n=n, name="reference")
            assert run.result.returncode == 0, run.tail()
            assert not run.events("recovery")
            cache[n] = run
        return cache[n]

    return get


@pytest.fixture(scope="session")
def reference(references: Callable[[int], Run]) -> Run:
    return references(WORLD)
