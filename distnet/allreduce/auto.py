"""`auto`: pick the all-reduce algorithm per message size and world size from a tuned table.

The table is written by ``python -m distnet.bench --tune`` and maps a world size p to a list of
``(max_bytes, algorithm)`` entries sorted by max_bytes: a message of n bytes uses the first entry
with ``n <= max_bytes`` and anything larger than the last entry uses the last one. On disk it is
JSON, ``{"2": [[4096, "recursive_doubling"], [67108864, "ring"]], ...}``.

Without a table (no file, or no row for this p) the choice comes from the α-β-γ cost model
(`distnet.allreduce.cost`) in `builtin_choice`. The file is checked when it is read (world sizes,
byte bounds, algorithm names; non-finite numbers are refused by `read_json`): a damaged file
stops the job with one line on every rank instead of silently running untuned.

The tune also writes, under ``"race"``, the near candidates at each measured size
(``{"2": [[1448, ["tree", "native"]], ...]}``, same bounds rule): called directly, `auto` times
those against each other during its first calls at a size on a communicator and keeps the
fastest (`distnet.allreduce.race`; DISTNET_AUTO_RACE=0 turns it off). `resolve`, which the
bucketed trainer and the compressors use once up front so that no agreement collective runs
inside backward, returns the tune's pick and never races.

Every rank must run the same algorithm or the job deadlocks, yet each rank reads its own file
(node-local caches can differ). So the table is read on rank 0 only and broadcast once per
communicator; the copy lives in the communicator's `CommState` (an MPI attribute), and since `Dup`
does not copy attributes, a new communicator agrees afresh.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distnet.allreduce import cost
from distnet.allreduce.mpi import CommState, comm_state, validate
from distnet.allreduce.native import native_allreduce
from distnet.allreduce.race import RACE_MAX, Race
from distnet.allreduce.registry import ALGORITHMS, NOT_REVOCABLE

TUNE_ENV = "DISTNET_TUNE_FILE"
RACE_ENV = "DISTNET_AUTO_RACE"
DEFAULT_TUNE_PATH = Path("~/.cache/distnet/allreduce_tune.json")

# A tune table: world size -> [(max_bytes, algorithm), ...] sorted by max_bytes.
TuneTable = dict[int, list[tuple[int, str]]]
# The race candidates: world size -> [(max_bytes, (algorithm, ...)), ...] sorted by max_bytes.
RaceTable = dict[int, list[tuple[int, tuple[str, ...]]]]

# Shared-memory MPI on one host, roughly: per-message latency and per-byte time. Only the ratio
# matters for the crossover; the tuned table replaces these numbers with measurements.
ALPHA_S = 5e-6
BETA_S_PER_BYTE = 1.0 / 5e9
# Reducing is not free in shared memory: NumPy adds at a few GB/s (two reads, one write per item).
GAMMA_S_PER_BYTE = 1.0 / 2e9


def tune_path() -> Path:
    """Where the tune table lives: $DISTNET_TUNE_FILE, else ~/.cache/distnet/allreduce_tune.json."""
    env = os.environ.get(TUNE_ENV)
    return Path(env).expanduser() if env else DEFAULT_TUNE_PATH.expanduser()


def tune_path_text() -> str:
    """The tune file's name for a message, without expanding it (which can fail)."""
    return os.environ.get(TUNE_ENV) or str(DEFAULT_TUNE_PATH)


# Bounds on a tune file's numbers: far above any real world size or message, low enough that a
# typo (or a hostile file) is refused rather than believed.
MAX_WORLD = 1 << 20
MAX_BYTES = 1 << 50


def parse_table(raw: Any, where: str = "tune file",
                known: set[str] | frozenset[str] | None = None) -> TuneTable:
    """A TuneTable from decoded JSON, checked: every problem is one UserError line.

    Keys are world sizes ("1" … MAX_WORLD), "spread" (the tune run's notes for readers,
    an object, not read further) and "race" (`parse_race`); each row is [max_bytes,
    algorithm] or [max_bytes, algorithm, notes], with 0 <= max_bytes <= MAX_BYTES and an
    algorithm auto may pick (`known`, by default `candidates()`). A file that does not say
    what auto should run is refused, not half used: a silent fallback would run a different
    algorithm than the one tuned.
    """
    from distnet.common.errors import UserError

    names = candidates() if known is None else known
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be a JSON object of world size -> rows")
    table: TuneTable = {}
    for key, rows in raw.items():
        if key in ("spread", "race"):
            if not isinstance(rows, dict):
                raise UserError(f"{where}: \"{key}\" must be an object")
            continue
        _world(key, where)
        if not isinstance(rows, list) or not rows:
            raise UserError(f"{where}: world size {key}: rows must be a non-empty list")
        entries: list[tuple[int, str]] = []
        for row in rows:
            if not (isinstance(row, list) and len(row) in (2, 3)):
                raise UserError(f"{where}: world size {key}: row {_short(row)} is not "
                                "[max_bytes, algorithm]")
            size, name = row[0], row[1]
            if isinstance(size, bool) or not isinstance(size, int) or not (
                    0 <= size <= MAX_BYTES):
                raise UserError(f"{where}: world size {key}: max_bytes {_short(size)} is not "
                                f"an integer in 0..{MAX_BYTES}")
            if not isinstance(name, str) or name not in names:
                raise UserError(f"{where}: world size {key}: unknown algorithm {_short(name)} "
                                f"(known: {', '.join(sorted(names))})")
            entries.append((size, name))
        bounds = [size for size, _ in entries]
        if len(set(bounds)) != len(bounds):
            raise UserError(f"{where}: world size {key}: max_bytes repeats (one algorithm per "
                            "size bound)")
        table[int(key)] = sorted(entries)
    return table


def _world(key: Any, where: str) -> int:
    """A world-size key ("1" … MAX_WORLD) as an int, else a UserError."""
    from distnet.common.errors import UserError

    # length first: int() refuses digit strings over 4,300 long (and "02" would alias "2")
    if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 7
            and not key.startswith("0") and int(key) <= MAX_WORLD):
        raise UserError(f"{where}: key {_short(key)} is not a world size in 1..{MAX_WORLD}")
    return int(key)


def parse_race(raw: Any, where: str = "tune file",
               known: set[str] | frozenset[str] | None = None) -> RaceTable:
    """The race candidates under a tune file's "race" key (absent: none), checked like the
    picks: world size -> rows [max_bytes, [algorithm, ...]] with 1..RACE_MAX distinct
    algorithms auto may pick, max_bytes distinct, in 0..MAX_BYTES."""
    from distnet.common.errors import UserError

    names = candidates() if known is None else known
    section = raw.get("race", {}) if isinstance(raw, dict) else {}
    if not isinstance(section, dict):
        raise UserError(f"{where}: \"race\" must be an object")
    table: RaceTable = {}
    for key, rows in section.items():
        p = _world(key, where)
        if not isinstance(rows, list) or not rows:
            raise UserError(f"{where}: race, world size {key}: rows must be a non-empty list")
        entries: list[tuple[int, tuple[str, ...]]] = []
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], list)):
                raise UserError(f"{where}: race, world size {key}: row {_short(row)} is not "
                                "[max_bytes, [algorithm, ...]]")
            size, algos = row
            if isinstance(size, bool) or not isinstance(size, int) or not (
                    0 <= size <= MAX_BYTES):
                raise UserError(f"{where}: race, world size {key}: max_bytes {_short(size)} "
                                f"is not an integer in 0..{MAX_BYTES}")
            if not 1 <= len(algos) <= RACE_MAX or len(set(map(repr, algos))) != len(algos):
                raise UserError(f"{where}: race, world size {key}: {_short(algos)} is not 1 to "
                                f"{RACE_MAX} distinct algorithms")
            for name in algos:
                if not isinstance(name, str) or name not in names:
                    raise UserError(f"{where}: race, world size {key}: unknown algorithm "
                                    f"{_short(name)} (known: {', '.join(sorted(names))})")
            entries.append((size, tuple(algos)))
        if len({b for b, _ in entries}) != len(entries):
            raise UserError(f"{where}: race, world size {key}: max_bytes repeats")
        table[p] = sorted(entries)
    return table


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_table(path: Path | None = None) -> TuneTable:
    """Read and check a tune table; a missing file is an empty table (auto uses the cost
    model), a damaged one a UserError."""
    return load_tune(path)[0]


def load_tune(path: Path | None = None) -> tuple[TuneTable, RaceTable]:
    """A tune file's picks and race candidates, both checked (missing file: both empty)."""
    from distnet.common.errors import UserError
    from distnet.common.jsonfile import read_json

    try:
        target = path or tune_path()
        missing = not target.exists()
    except (OSError, RuntimeError) as exc:  # an unknown ~user, a name too long, no access
        raise UserError(f"tune file {os.environ.get(TUNE_ENV, '')!r}: {exc}") from None
    if missing:
        return {}, {}
    where = f"tune file {target}"
    raw = read_json(str(target), where, max_bytes=1 << 20)
    return parse_table(raw, where), parse_race(raw, where)


def save_table(table: TuneTable, path: Path | None = None,
               spread: dict[int, list[dict[str, Any]]] | None = None,
               race: RaceTable | None = None) -> Path:
    """Write a tune table (creating the directory); returns the path written.

    `spread` (world size -> one dict per measured size: pick, mean, spread over the tune
    passes, runner-up within noise) is stored under the key "spread", which `parse_table`
    skips, and `race` under "race" (`parse_race`); the other world sizes' rows, spread and race
    already in the file are kept.
    """
    target = path or tune_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] = {}
    if target.exists():
        try:
            old = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
    if not isinstance(old, dict):
        old = {}
    sections = []
    race_rows = {p: [[b, list(a)] for b, a in sorted(rows)] for p, rows in (race or {}).items()}
    new_rows: tuple[tuple[str, dict[int, list[Any]]], ...] = (("spread", spread or {}),
                                                               ("race", race_rows))
    for name, new in new_rows:
        kept = old.get(name, {})
        kept = {k: v for k, v in kept.items() if isinstance(v, list)} if isinstance(
            kept, dict) else {}
        kept.update({str(p): rows for p, rows in new.items()})
        if kept:
            sections.append(f' "{name}": {{\n' + ",\n".join(
                f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(kept.items())) + "\n }")
    # One line per world size: the table stays readable and diffable.
    lines = [f" {json.dumps(str(p))}: {json.dumps([[b, a] for b, a in sorted(rows)])}"
             for p, rows in sorted(table.items())]
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("{\n" + ",\n".join(lines + sections) + "\n}\n", encoding="utf-8")
    tmp.replace(target)  # atomic: a concurrent reader sees the old or the new table, not half
    return target


MODELLED = ("recursive_doubling", "rabenseifner", "ring", "tree")  # tie -> earlier wins
# Distinct message sizes whose choice a communicator remembers (a trainer uses a handful).
CHOICES_PER_COMM = 256


def builtin_choice(p: int, nbytes: int, known: set[str] | frozenset[str]) -> str:
    """The cheapest modelled algorithm among `known`; `native` when none of them is modelled."""
    best, best_s = "native", math.inf
    for name in MODELLED:
        if name in known:
            t = cost.cost_s(name, p, nbytes, ALPHA_S, BETA_S_PER_BYTE, GAMMA_S_PER_BYTE)
            if t < best_s:
                best, best_s = name, t
    return best


def choose(table: TuneTable, p: int, nbytes: int, known: set[str] | frozenset[str]) -> str:
    """The algorithm for an nbytes message over p ranks: table row if usable, else the model.

    Entries naming algorithms that are not in `known` (renamed, not registered here, or `auto`
    itself) are skipped, so a stale table degrades to its neighbours rather than failing.
    """
    usable = [(b, a) for b, a in table.get(p, []) if a in known and a != "auto"]
    for max_bytes, name in usable:
        if nbytes <= max_bytes:
            return name
    if usable:
        return usable[-1][1]
    return builtin_choice(p, nbytes, known)


def candidates(revocable_only: bool = False) -> frozenset[str]:
    """Algorithms auto may pick: everything registered except itself (native always); on a
    fault-tolerant communicator only those a revoke can wake."""
    names = frozenset(ALGORITHMS) - {"auto"} | {"native"}
    return names - NOT_REVOCABLE if revocable_only else names


def race_setting() -> bool:
    """DISTNET_AUTO_RACE: unset or "1" races the tune's near candidates, "0" keeps the pick."""
    from distnet.common.errors import UserError

    value = os.environ.get(RACE_ENV, "1")
    if value not in ("0", "1"):
        raise UserError(f"{RACE_ENV} must be 0 or 1, got {_short(value)}")
    return value == "1"


def agreed_table(comm: Any) -> TuneTable:
    """The table every rank of comm uses: rank 0's (collective on first use per comm).

    Rank 0's race candidates and DISTNET_AUTO_RACE come with it: a rank that raced while
    another did not would wait in the race's decision forever. A damaged file or setting is a
    UserError on every rank (rank 0 read it; the others would otherwise wait for a table that
    never comes).
    """
    from distnet.common.errors import UserError

    state = comm_state(comm)
    if state.auto_table is None:
        got: tuple[TuneTable, RaceTable, bool] | str | None = None
        if comm.rank == 0:
            try:
                got = (*load_tune(), race_setting())
            except UserError as exc:
                got = str(exc)
            except Exception as exc:  # noqa: BLE001 - raised alone, it would hang the others
                got = f"tune file {tune_path_text()}: {type(exc).__name__}: {exc}"
        got = comm.bcast(got, root=0)
        if isinstance(got, str):
            raise UserError(got)
        state.auto_table, state.auto_race, state.auto_race_on = got
    return state.auto_table


def resolve(comm: Any, nbytes: int) -> str:
    """The tune's pick for nbytes on comm (collective on first use per comm). It never races:
    callers that resolve up front (the bucketed trainer) run this algorithm."""
    return choose(agreed_table(comm), comm.size, nbytes,
                  candidates(comm_state(comm).revocable_only))


def race_candidates(race: RaceTable, p: int, nbytes: int, pick: str,
                    known: set[str] | frozenset[str]) -> tuple[str, ...]:
    """What auto races for nbytes over p ranks: the row's candidates auto may run here, the
    pick first; just (pick,) when no row covers nbytes or one candidate is left."""
    rows = race.get(p, [])
    row = next((names for max_bytes, names in rows if nbytes <= max_bytes),
               rows[-1][1] if rows else ())
    rest = [a for a in row if a in known and a not in ("auto", pick)]
    return (pick, *rest)


def chosen(comm: Any, nbytes: int) -> str:
    """The algorithm auto runs now for nbytes on comm: the race's winner once decided, the
    pick before any call or when nothing is raced, "race of a,b,…" while racing."""
    state = comm_state(comm)
    found = state.auto_choices.get(nbytes)
    if isinstance(found, Race):
        return "race of " + ",".join(found.names)
    return state.auto_names.get(nbytes) or resolve(comm, nbytes)


def deciding(comm: Any, nbytes: int) -> bool:
    """True until auto has settled what it runs for nbytes on comm: before its first call at
    that size, and while that size's race runs (the same on every rank)."""
    found = comm_state(comm).auto_choices.get(nbytes)
    return found is None or isinstance(found, Race)


def _choice(state: CommState, comm: Any, nbytes: int) -> Callable[..., None] | Race:
    found = state.auto_choices.get(nbytes)
    if found is None:
        if len(state.auto_choices) >= CHOICES_PER_COMM:
            oldest = next(iter(state.auto_choices))
            del state.auto_choices[oldest]
            state.auto_names.pop(oldest, None)
            state.auto_races.pop(oldest, None)
        pick = resolve(comm, nbytes)
        names: tuple[str, ...] = (pick,)
        if state.auto_race_on and not state.revocable_only:  # a race's decision is not revocable
            names = race_candidates(state.auto_race or {}, comm.size, nbytes, pick,
                                    candidates())
        # `native` is a candidate even when unregistered (auto works with an empty registry).
        fns = tuple(ALGORITHMS.get(a, native_allreduce) for a in names)
        found = Race(names, fns, nbytes) if len(names) > 1 else fns[0]
        state.auto_choices[nbytes] = found
        state.auto_names[nbytes] = pick
    return found


# The last (communicator, size, algorithm): a trainer calls auto on one communicator with the
# same few sizes, and at 8 B – 2 KiB the lookup (validate, CommState, dict) was 0.5 µs on top of
# a 1.9 µs recursive doubling (auto 1.25x the best). Holding the communicator keeps its object
# alive, so `is` cannot match a new one; the chosen algorithm validates the buffer itself.
# The unpacked tuple and the plain attribute read are what is left: ~80 ns per call here
# against ~100 ns with a None check and getattr. A size still racing never gets here.
_last: tuple[Any, int, Callable[..., None]] = (None, -1, native_allreduce)


def auto_allreduce(comm: Any, buf: Any, op: Any = None) -> None:
    """All-reduce buf in place with the algorithm the tune table picks for its size and p.

    Cost: that of the chosen algorithm, plus one broadcast of the table the first time a
    communicator is used. Where the tune kept near candidates, the first calls at a size race
    them (`distnet.allreduce.race`: k·(PASSES·WARM + timed_calls(n)) calls, 8 to 48 of them
    timed, and one small all-reduce) and the winner runs from then on. The choice per
    (communicator, size) is kept in its CommState.
    """
    global _last
    last_comm, last_bytes, fn = _last
    try:
        hit = last_comm is comm and last_bytes == buf.nbytes
    except AttributeError:  # not an array: validate below says so in one line
        hit = False
    if not hit:
        nbytes = validate(buf).nbytes  # a bad buffer fails here, before any communication
        state = comm_state(comm)
        found = _choice(state, comm, nbytes)
        if isinstance(found, Race):
            won = found.step(comm, buf, op)
            if won is not None:
                state.auto_choices[nbytes] = found.fns[won]
                state.auto_names[nbytes] = found.names[won]
                state.auto_races[nbytes] = found
                _last = (comm, nbytes, found.fns[won])
            return
        fn = found
        _last = (comm, nbytes, fn)
    if op is None:
        fn(comm, buf)
    else:
        fn(comm, buf, op=op)
