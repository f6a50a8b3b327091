"""Seeded, bounded fuzzing of every CLI's flags and every file reader with hostile values.

Each example must end in exit status 0 or 2 (or, for a reader, a value or a UserError), with no
traceback, within EXAMPLE_LIMIT_S, and change no file outside its temp dir. Run in-process (no
mpirun per example): `python tests/fuzz_hostile.py GROUP` runs one group in its own process,
because the MPI CLIs initialise MPI (a singleton) in the process that calls them.
tests/unit/test_fuzz.py starts every group under a hard timeout.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_LIMIT_S = 30
EXAMPLES = int(os.environ.get("DISTNET_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)

NUMBERS = ["0", "-0", "1", "-1", "2", "7", "nan", "NaN", "inf", "-inf", "1e300", "-1e300",
           "1e-320", "9" * 30, "-" + "9" * 30, "18446744073709551616", "0.5", "3.7", "1e9",
           "0x10", "", " ", "abc", "1,2", "ünï", "\x00", "--", "1e400"]
WORDS = ["ring", "native", "auto", "bogus", "", "adam", "relu", "random", "packed", "ecmp",
         "fat-tree:k=4", "fat-tree:k=100000", "clos:pods=nan", "leaf-spine:leaves=2",
         "custom:/dev/null", "crash:rank=0:step=1", "slow:rank=0:step=1:seconds=nan",
         "64,64", "100000,100000", "-3", "1MiB", "9" * 400, "1PiB", "float16"]


class Hang(Exception):
    pass


def _alarm(*_: object) -> None:
    raise Hang(f"an example ran longer than {EXAMPLE_LIMIT_S} s")


def snapshot(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under folders: what no example may change."""
    seen: dict[str, tuple[int, int]] = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in (".venv", "__pycache__", ".git",
                                                            ".hypothesis", ".mypy_cache",
                                                            ".ruff_cache")]
            for name in filenames:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st_ = os.stat(path)
                    seen[path] = (st_.st_size, st_.st_mtime_ns)
    return seen


def call(fn: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """fn(argv) in a fresh temp working dir; (status, stderr). Raises on a hang."""
    err, out = io.StringIO(), io.StringIO()
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dnfuzz-") as work:
        os.chdir(work)
        signal.alarm(EXAMPLE_LIMIT_S)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    status = fn(argv)
                except SystemExit as exc:  # argparse --help / errors
                    status = int(exc.code or 0) if not isinstance(exc.code, str) else 2
        finally:
            signal.alarm(0)
            os.chdir(old)
    return int(status or 0), err.getvalue() + out.getvalue()


def check(fn: Callable[[list[str]], int], argv: list[str]) -> None:
    status, text = call(fn, argv)
    assert status in (0, 2), f"{argv}: status {status}\n{text[-2000:]}"
    assert "Traceback" not in text, f"{argv}:\n{text[-2000:]}"


def flags_and_values(flags: list[str], values: list[str]) -> st.SearchStrategy[list[str]]:
    pair = st.tuples(st.sampled_from(flags), st.sampled_from(values) | st.text(max_size=8))
    return st.lists(pair, min_size=1, max_size=3).map(lambda ps: [x for p in ps for x in p])


# ---- CLIs ------------------------------------------------------------------------------------
def group_topology() -> None:
    from topology.cli import main

    flags = ["--topology", "--algorithm", "--size", "--routing", "--placement", "--hosts",
             "--seed", "--link-gbps", "--link-latency-us", "--fail-links", "--alpha-us",
             "--gamma-ns-per-byte", "--engine"]

    @SETTINGS
    @given(flags_and_values(flags, NUMBERS + WORDS), st.sampled_from(["simulate", "compare"]))
    def simulate(extra: list[str], cmd: str) -> None:
        base = ["--topology", "fat-tree:k=4", "--size" if cmd == "simulate" else "--sizes",
                "64KiB"]
        check(main, [cmd, *base, *[("--sizes" if x == "--size" and cmd == "compare" else x)
                                   for x in extra]])

    @SETTINGS
    @given(st.sampled_from(WORDS + NUMBERS))
    def info(spec: str) -> None:
        check(main, ["info", spec])

    simulate()
    info()


def group_whatif() -> None:
    from distnet.analysis.whatif import main
    from tests.unit.test_whatif_cli import write_metrics

    folder = Path(tempfile.mkdtemp(prefix="dnfuzz-whatif-"))
    metrics = write_metrics(folder / "run.jsonl")
    flags = ["--topology", "--ranks", "--algorithms", "--placement", "--routing",
             "--bucket-mb", "--first-bucket-mb", "--link-gbps", "--alpha-us", "--cores",
             "--percentile", "--seed", "--batch-per-rank", "--calibration", "--json"]

    @SETTINGS
    @given(flags_and_values(flags, NUMBERS + WORDS + [metrics, "/dev/full", "/"]))
    def projection(extra: list[str]) -> None:
        check(main, ["--metrics", metrics, "--topology", "fat-tree:k=4", "--ranks", "4",
                     *extra])
        assert Path(metrics).exists()

    projection()


def group_train() -> None:
    import distnet.train as train

    flags = ["--batch-size", "--lr", "--optimizer", "--momentum", "--weight-decay",
             "--lr-schedule", "--hidden", "--activation", "--dropout", "--seed", "--samples",
             "--val-fraction", "--dtype", "--allreduce", "--bucket-mb", "--checkpoint-every",
             "--early-stopping", "--inject", "--deadline-s", "--metrics", "--save",
             "--checkpoint-dir", "--data", "--fault-plan"]
    paths = ["/dev/full", "/proc/nope/x", "out.jsonl", "p.npz", "ck", "/dev/null"]

    @SETTINGS
    @given(flags_and_values(flags, NUMBERS + WORDS + paths))
    def flags_fuzz(extra: list[str]) -> None:
        base = ["--samples", "64", "--hidden", "4", "--quiet"]
        # The run's length is fixed last (later flags win): only its inputs are hostile.
        check(train.main, [*base, *extra, "--epochs", "1", "--max-steps", "2"])

    flags_fuzz()


def group_bench() -> None:
    from distnet.bench.__main__ import main

    flags = ["--sizes", "--iters", "--warmup", "--algorithms", "--min-busbw", "--dtype",
             "--step-factor", "--min-bytes", "--max-bytes"]

    @SETTINGS
    @given(flags_and_values(flags, NUMBERS + WORDS))
    def sweep(extra: list[str]) -> None:
        check(main, ["--sizes", "8", "--iters", "1", "--warmup", "0", "--algorithms", "native",
                     *extra])

    oflags = ["--steps", "--warmup", "--batch", "--hidden", "--bucket-mb", "--first-bucket-mb",
              "--n-in", "--n-out", "--algorithm"]

    @SETTINGS
    @given(flags_and_values(oflags, NUMBERS + WORDS))
    def overlap(extra: list[str]) -> None:
        check(main, ["overlap", "--steps", "1", "--warmup", "0", "--hidden", "8", *extra])

    sweep()
    overlap()


def group_supervise() -> None:
    from distnet.ft.supervise import main

    flags = ["-n", "--retries", "--min-ranks", "--grow-to", "--timeout-s"]

    # Only flag values that are refused before a job starts: a valid set would launch mpirun.
    @SETTINGS
    @given(flags_and_values(flags, [v for v in NUMBERS if v not in ("1", "2", "7", "0")]))
    def flags_fuzz(extra: list[str]) -> None:
        status, text = call(main, [*extra, "--retries", "-1", "--", "--checkpoint-dir", "c"])
        assert status == 2 and "Traceback" not in text, f"{extra}: {status}\n{text}"

    flags_fuzz()


# ---- file readers ----------------------------------------------------------------------------
def _valid_files(folder: Path) -> dict[str, bytes]:
    import json

    import numpy as np

    from distnet.training import checkpoint

    npz = folder / "d.npz"
    np.savez(npz, x=np.arange(12.0).reshape(6, 2), y=np.array([0, 1, 2, 0, 1, 2]))
    ck = folder / "ckpt-000000001.npz"
    checkpoint.save(str(ck), {"a": np.zeros(3)}, {"kind": "distnet-checkpoint"})
    idx = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(8)
    return {
        "npz": npz.read_bytes(), "csv": b"1,2,0\n3,4,1\n5,6,2\n", "idx": idx,
        "checkpoint": ck.read_bytes(),
        "metrics": b'{"schema": 1, "event": "step", "forward_s": 0.1}\n',
        "plan": b'[{"kind": "slow", "rank": 0, "step": 1, "seconds": 0.1}]',
        "tune": b'{"2": [[8, "ring"]], "race": {"2": [[8, ["ring", "tree"]]]}}',
        "topology": json.dumps({"nodes": {"h0": 0, "h1": 0, "s": 1},
                                "cables": [["h0", "s"], ["h1", "s", {"gbps": 100}]]}).encode(),
        "calibration": b'[{"algorithm": "ring", "bytes": 8, "ranks": 2, "avg_s": 1e-6}]',
    }


def _read(kind: str, path: str) -> None:
    from distnet.allreduce.auto import load_tune
    from distnet.analysis.projection import load_profile
    from distnet.common.errors import UserError
    from distnet.data.dataset import load
    from distnet.ft.faultplan import load_plan
    from distnet.training import checkpoint
    from topology.calibrate import load_records
    from topology.spec import parse_network

    readers: dict[str, Callable[[], object]] = {
        "npz": lambda: load(path), "csv": lambda: load(path), "idx": lambda: load(path),
        "checkpoint": lambda: checkpoint.resume_point(os.path.dirname(path)),
        "metrics": lambda: load_profile(path), "plan": lambda: load_plan(path, 2),
        "tune": lambda: load_tune(Path(path)),
        "topology": lambda: parse_network(f"custom:{path}"),
        "calibration": lambda: load_records(path),
    }
    signal.alarm(EXAMPLE_LIMIT_S)
    try:
        readers[kind]()
    except UserError as exc:
        assert "\n" not in str(exc), f"{kind}: multi-line error {exc}"
    finally:
        signal.alarm(0)


NAMES = {"npz": "d.npz", "csv": "d.csv", "idx": "t-images-idx3-ubyte", "checkpoint":
         "ckpt-000000001.npz", "metrics": "m.jsonl", "plan": "p.json", "tune": "t.json",
         "topology": "n.json", "calibration": "b.json"}
HOSTILE_BYTES = [b"NaN", b"Infinity", b"1e400", b"-1", b"9" * 5000, b"[" * 50_000,
                 b"\xff\xfe", b"\x00" * 16, b'"', b"{}", b"[]", b"null", b"\xff" * 12]


def group_files() -> None:
    work = Path(tempfile.mkdtemp(prefix="dnfuzz-files-"))
    (work / "valid").mkdir()
    valid = _valid_files(work / "valid")

    @settings(SETTINGS, max_examples=3 * EXAMPLES)  # readers are cheap: more mutations
    @given(st.sampled_from(sorted(NAMES)), st.data())
    def mutate(kind: str, data: st.DataObject) -> None:
        raw = bytearray(valid[kind])
        how = data.draw(st.sampled_from(["cut", "flip", "insert", "replace"]))
        at = data.draw(st.integers(0, len(raw)))
        if how == "cut":
            raw = raw[:at]
        elif how == "flip" and raw:
            raw[min(at, len(raw) - 1)] ^= data.draw(st.integers(1, 255))
        else:
            junk = data.draw(st.sampled_from(HOSTILE_BYTES) | st.binary(max_size=16))
            raw[at:at + (len(junk) if how == "replace" else 0)] = junk
        with tempfile.TemporaryDirectory(prefix="dnfuzz-", dir=work) as folder:
            path = os.path.join(folder, NAMES[kind])
            Path(path).write_bytes(bytes(raw))
            if kind == "idx":  # the labels file beside the images
                Path(folder, "t-labels-idx1-ubyte").write_bytes(
                    bytes([0, 0, 8, 1, 0, 0, 0, 2, 0, 1]))
            _read(kind, path)

    mutate()


GROUPS = {"topology": group_topology, "whatif": group_whatif, "train": group_train,
          "bench": group_bench, "supervise": group_supervise, "files": group_files}


def main(group: str) -> int:
    signal.signal(signal.SIGALRM, _alarm)
    os.environ.setdefault("DISTNET_MEMORY_BUDGET", str(256 << 20))
    os.environ.pop("DISTNET_TUNE_FILE", None)
    watched = [ROOT / "distnet", ROOT / "topology", ROOT / "tests", ROOT / "launch",
               ROOT / "docs", Path.home()]
    before = snapshot(watched)
    GROUPS[group]()
    after = snapshot(watched)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"files outside the temp dirs changed: {changed[:10]}"
    print(f"fuzz {group}: {EXAMPLES} examples per property, all exit 0/2, no traceback")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1]))
