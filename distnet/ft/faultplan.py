"""Fault plans: which fault hits which rank at which step, as plain data.

A fault is written either as a spec string, `kind:key=value:key=value`, e.g.

    crash:rank=2:step=5            rank 2 exits abruptly (SIGKILLs itself) at the start of step 5
    crash:rank=0:step=3:at=allreduce   ... in the middle of the gradient all-reduce
    crash:rank=0:step=4:at=checkpoint  ... while writing the checkpoint after step 4
    crash:rank=1:step=5:at=recovery    ... while the others recover from an earlier fault
    kill:rank=2:step=5             another rank sends it SIGKILL (killed from outside)
    hang:rank=1:step=6             rank 1 stops responding (sleeps forever)
    hang:rank=1:step=6:at=allreduce    ... freezes (SIGSTOP) inside the reduction, after arriving
    hang:rank=1:step=6:at=allreduce:seconds=60   ... only its main thread sleeps there (60 s)
    hang:rank=1:step=6:at=evaluation   ... freezes in the first evaluation at or after step 6
    slow:rank=1:step=2:seconds=0.05:steps=5   a straggler: 50 ms extra per step for 5 steps
    nan:rank=3:step=4              rank 3's local gradient gets a NaN
    bitflip:rank=1:step=4          a bit flips in a gradient chunk rank 1 receives
    delay:rank=1:step=3:seconds=0.2    rank 1's gradient messages are delayed
    drop:rank=1:step=3             a gradient message rank 1 sends is lost

or as a JSON file: a list of such objects ({"kind": "crash", "rank": 2, "step": 5}), or
{"faults": [...]} or {"chaos": {"seed": 1, "count": 3, "kinds": [...], "max_step": 40}} for
seeded random faults. Steps count optimiser steps from 0 over the whole run (`step=5` fires
when 5 steps are done). Ranks are MPI_COMM_WORLD ranks, so a rank keeps its name after others
fail. `attempt` (default 0) is the restart attempt the fault belongs to: a job restarted by the
supervisor does not meet the same injected fault again.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from distnet.common.errors import UserError
from distnet.common.jsonfile import read_json

KINDS = ("crash", "kill", "hang", "slow", "nan", "bitflip", "delay", "drop")
PLACES = ("compute", "allreduce", "checkpoint", "recovery", "evaluation")
CHAOS_KINDS = ("crash", "kill", "nan", "bitflip", "slow")
FATAL = ("crash", "kill", "hang")
# Bounds that keep a plan's cost small: a chaos plan is drawn before training starts, and a
# sleep of 1e300 s (or NaN s) is an error in time.sleep, not a fault.
MAX_FAULTS = 10_000
MAX_SECONDS = 86_400.0
MAX_STEP = 10**12


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    step: int
    at: str = "compute"
    seconds: float = 0.0  # slow/delay: extra time; hang: 0 means forever
    steps: int = 1  # slow/delay: how many consecutive steps it lasts
    attempt: int = 0

    def to_spec(self) -> str:
        d = Fault(self.kind, self.rank, self.step)
        extra = [f"{k}={v}" for k, v in asdict(self).items()
                 if k not in ("kind", "rank", "step") and v != getattr(d, k)]
        return ":".join([self.kind, f"rank={self.rank}", f"step={self.step}", *extra])


_FIELDS: dict[str, type] = {"rank": int, "step": int, "at": str, "seconds": float,
                            "steps": int, "attempt": int}


def parse_spec(spec: str) -> Fault:
    """'crash:rank=2:step=5' -> Fault; any mistake is one UserError line naming the spec."""
    kind, *parts = spec.strip().split(":")
    values: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or key not in _FIELDS:
            raise UserError(f"fault spec {spec!r}: bad field {part!r} "
                            f"(known: {', '.join(_FIELDS)})")
        values[key] = raw
    return make_fault({"kind": kind, **values}, where=f"fault spec {spec!r}")


def make_fault(raw: dict[str, Any], where: str) -> Fault:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a fault must be an object, got {raw!r}")
    unknown = set(raw) - set(_FIELDS) - {"kind"}
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise UserError(f"{where}: unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
    for key in ("rank", "step"):
        if key not in raw:
            raise UserError(f"{where}: missing {key}=")
    values: dict[str, Any] = {}
    for key, typ in _FIELDS.items():
        if key in raw:
            values[key] = _field(key, typ, raw[key], where)
    fault = Fault(kind=kind, **values)
    if fault.rank < 0 or fault.step < 0 or fault.steps < 1 or fault.seconds < 0:
        raise UserError(f"{where}: rank and step must be >= 0, steps >= 1, seconds >= 0")
    if fault.seconds > MAX_SECONDS or max(fault.step, fault.steps, fault.attempt) > MAX_STEP:
        raise UserError(f"{where}: seconds must be <= {MAX_SECONDS:g}, step, steps and attempt "
                        f"<= {MAX_STEP}")
    if fault.at not in PLACES:
        raise UserError(f"{where}: unknown place at={fault.at!r} (known: {', '.join(PLACES)})")
    if fault.at == "evaluation" and fault.kind != "hang":
        raise UserError(f"{where}: at=evaluation is only for hang faults")
    if fault.at not in ("compute", "evaluation") and not (
            fault.kind == "crash" or (fault.kind == "hang" and fault.at == "allreduce")):
        raise UserError(f"{where}: at= is only for crash faults (and hang at=allreduce or "
                        "at=evaluation)")
    return fault


def _field(key: str, typ: type, raw: Any, where: str) -> Any:
    """One field of a fault, strictly: ints are whole numbers, floats finite, never bools."""
    bad = UserError(f"{where}: {key} must be {typ.__name__}, got {raw!r}")
    if isinstance(raw, bool) or (typ is not str and not isinstance(raw, int | float | str)):
        raise bad
    if typ is str:
        return str(raw)
    try:
        if typ is int:
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise bad
                return int(raw)
            return int(raw)
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {key} must be a finite number, got {raw!r}")
    return value


def load_plan(path: str, world: int) -> list[Fault]:
    where = f"--fault-plan {path}"
    return plan_from_json(read_json(path, where), world, where=where)


def plan_from_json(raw: Any, world: int, where: str) -> list[Fault]:
    if isinstance(raw, dict) and "chaos" in raw:
        c = raw["chaos"]
        if not isinstance(c, dict):
            raise UserError(f"{where}: chaos must be an object")
        unknown = set(c) - {"seed", "count", "max_step", "kinds", "min_step"}
        if unknown:
            raise UserError(f"{where}: chaos has unknown field(s) {', '.join(sorted(unknown))}")
        kinds = c.get("kinds", list(CHAOS_KINDS))
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
            raise UserError(f"{where}: chaos kinds must be a non-empty list of fault kinds")
        nums = {k: _field(k, int, c.get(k, d), f"{where}: chaos")
                for k, d in (("seed", 0), ("count", 3), ("max_step", 40), ("min_step", 2))}
        if not 0 <= nums["count"] <= MAX_FAULTS or not 0 <= nums["min_step"] <= MAX_STEP \
                or not 0 <= nums["max_step"] <= MAX_STEP:
            raise UserError(f"{where}: chaos count must be in 0..{MAX_FAULTS}, steps in "
                            f"0..{MAX_STEP}")
        return chaos_plan(nums["seed"], world, nums["count"], nums["max_step"], tuple(kinds),
                          nums["min_step"])
    if isinstance(raw, dict):
        raw = raw.get("faults")
    if not isinstance(raw, list):
        raise UserError(f"{where}: expected a list of faults, {{\"faults\": [...]}} "
                        "or {\"chaos\": {...}}")
    if len(raw) > MAX_FAULTS:
        raise UserError(f"{where}: {len(raw)} faults, at most {MAX_FAULTS} allowed")
    return [make_fault(item, where=f"{where}: fault {i}") for i, item in enumerate(raw)]


def chaos_plan(seed: int, world: int, count: int, max_step: int,
               kinds: tuple[str, ...] = CHAOS_KINDS, min_step: int = 2) -> list[Fault]:
    """`count` seeded random faults; fatal ones hit distinct ranks and leave one rank alive."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or count < 0 or max_step <= min_step or world < 1:
        raise UserError(f"chaos plan: bad kinds {bad}, count {count} or steps "
                        f"{min_step}..{max_step}")
    rng = random.Random(seed)
    faults: list[Fault] = []
    dead: set[int] = set()
    for _ in range(count):
        kind = rng.choice(kinds)
        rank = rng.randrange(world)
        step = rng.randrange(min_step, max_step)
        if kind in FATAL:
            if rank in dead or len(dead) >= world - 1:
                continue  # a chaos run must keep a survivor to prove anything
            dead.add(rank)
        slow = kind == "slow"
        faults.append(Fault(kind, rank, step, seconds=0.02 if slow else 0.0,
                            steps=3 if slow else 1))
    return faults


def collect(fault_plan: str | None, inject: list[str], world: int,
            attempt: int = 0) -> list[Fault]:
    """All faults of a run (the plan file's, then the --inject ones), checked against world.

    Only the faults of this attempt must fit: a job restarted on fewer ranks still carries
    the plan of its first attempt.
    """
    faults = load_plan(fault_plan, world) if fault_plan else []
    faults += [parse_spec(s) for s in inject]
    for f in faults:
        if f.rank >= world and f.attempt == attempt:
            raise UserError(f"fault {f.to_spec()!r} names rank {f.rank} but the job has "
                            f"{world} rank(s)")
    return faults
