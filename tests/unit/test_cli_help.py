"""Every option of every CLI says what it is: a newcomer must not guess accepted values."""

from __future__ import annotations

import argparse
import importlib

import pytest

PARSERS = [
    "distnet.training.config", "distnet.analysis.whatif", "distnet.bench.sweep",
    "distnet.bench.overlap",
    "distnet.bench.training", "distnet.ft.supervise", "topology.cli", "topology.emulate.cli",
]


def undocumented(name: str, parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                missing += undocumented(f"{name} {sub}", sp)
        elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    return missing


@pytest.mark.parametrize("module", PARSERS)
def test_every_option_has_help(module: str) -> None:
    parser = importlib.import_module(module).build_parser()
    assert undocumented(module, parser) == []


def test_undocumented_is_found() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bare")
    p.add_argument("--told", help="is told")
    assert undocumented("x", p) == ["x: --bare"]


def test_train_help_shows_defaults_and_choices() -> None:
    from distnet.training.config import build_parser

    text = build_parser().format_help()
    assert "(default: 5)" in text  # --epochs
    assert "{adadelta,adam,sgd}" in text  # names from nn/optim.py, not a copy
