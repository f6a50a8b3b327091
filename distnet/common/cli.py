"""Command-line plumbing shared by every tool: one argparse base, one error-to-exit wrapper, and
flags declared once on a dataclass field (default, help, range) from which the parser is built.

Every CLI of the project follows the same contract: bad input is one line
``PROG: error: what is wrong`` on stderr and exit status 2; `--help` is printed once (by rank 0
under mpirun, not once per rank) and shows every option's default.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, field, fields
from typing import Any, NoReturn

from distnet.common.errors import UserError

EXIT_OK = 0
EXIT_USER_ERROR = 2

# Set by mpirun/srun before our process starts; read without initialising MPI.
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (0 when not launched by one)."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class HelpFormatter(argparse.HelpFormatter):
    """Appends '(default: X)' to an option's help unless the text already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if (action.option_strings and "default" not in text and not action.required
                and not switch and default is not None and default != []
                and default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse that raises UserError instead of printing usage and exiting, and that prints
    --help once per job rather than once per rank."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UserError(message)

    def _print_message(self, message: str, file: Any = None) -> None:
        if launcher_rank() == 0:
            super()._print_message(message, file)


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run a single-process CLI body and turn a UserError into one line and exit status 2."""
    try:
        return body()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `| head`: the reader left, nothing more to say
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130


# ---- flags declared on dataclass fields ------------------------------------------------------

def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           choices: Sequence[str] | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           metavar: str | None = None, flag: str | None = None, negate: str | None = None,
           repeat: bool = False, cli: bool = True) -> Any:
    """A dataclass field that is also a command-line option.

    `low`/`high` bound numbers (inclusive unless `*_open`); every float option must be finite.
    A bool field is a store_true switch, or with `negate="--no-x"` a store_false one. `repeat`
    makes a list field an appendable option. `cli=False` keeps the field off the command line.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None,
            "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "metavar": metavar, "flag": flag, "negate": negate, "repeat": repeat, "cli": cli}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _flag(f: Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _cli_fields(cls: type) -> list[Field[Any]]:
    return [f for f in fields(cls) if f.metadata.get("cli", False)]


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per `option(...)` field of dataclass `cls`, defaults from the field."""
    for f in _cli_fields(cls):
        md = f.metadata
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        kw: dict[str, Any] = {"dest": f.name, "help": md["help"]}
        if md["metavar"]:
            kw["metavar"] = md["metavar"]
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "bool":
            if md["negate"]:
                parser.add_argument(md["negate"], action="store_false", **kw)
            else:
                parser.add_argument(_flag(f), action="store_true", **kw)
            continue
        if md["repeat"]:
            parser.add_argument(_flag(f), action="append", default=[], **kw)
            continue
        if md["choices"] and not md["metavar"]:
            kw["metavar"] = "{" + ",".join(md["choices"]) + "}"  # checked by check_options
        base = kind.split("|")[0].strip()
        if base in ("int", "float"):
            kw["type"] = int if base == "int" else float
        parser.add_argument(_flag(f), default=default, **kw)


def from_namespace(cls: type, ns: argparse.Namespace, **overrides: Any) -> Any:
    """Build `cls` from parsed options (fields off the command line keep their defaults)."""
    values = {f.name: getattr(ns, f.name) for f in _cli_fields(cls) if hasattr(ns, f.name)}
    values.update(overrides)
    return cls(**values)


def check_options(obj: Any) -> None:
    """UserError naming the flag for the first option value outside its declared range."""
    for f in _cli_fields(type(obj)):
        md, value, name = f.metadata, getattr(obj, f.name), _flag(f)
        if md["choices"] and value not in md["choices"]:
            raise UserError(f"{name}: unknown value {value!r} (known: {', '.join(md['choices'])})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}")
        low, high = md["low"], md["high"]
        if low is not None and (value <= low if md["low_open"] else value < low):
            raise UserError(f"{name} must be {'>' if md['low_open'] else '>='} {_num(low)}, "
                            f"got {_num(value)}")
        if high is not None and (value >= high if md["high_open"] else value > high):
            raise UserError(f"{name} must be {'<' if md['high_open'] else '<='} {_num(high)}, "
                            f"got {_num(value)}")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) or float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"
