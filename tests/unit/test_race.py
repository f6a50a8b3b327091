"""auto's race: which candidates the tune keeps, how the file stores them, how a race runs.

The MPI side (every rank agrees, the faster candidate wins, the sums stay exact) is in
tests/mpi/test_auto_bucket.py; here the pure parts, with a one-rank fake communicator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distnet.allreduce import auto, race
from distnet.bench import report, tuning
from distnet.common.errors import UserError

KNOWN = frozenset({"native", "ring", "tree", "shm", "recursive_doubling", "rabenseifner"})


def _passes(size: int, **meds: list[float]) -> list[dict]:
    return [{"algorithm": a, "bytes": size, "median_s": sum(m) / len(m), "pass_medians_s": m,
             "ranks": 2} for a, m in meds.items()]


def test_race_keeps_what_scored_within_the_bound_best_first() -> None:
    recs = _passes(64, ring=[1.0, 1.0, 1.0], tree=[1.5, 1.4, 1.6], shm=[2.5, 2.2, 3.0],
                   native=[1.1, 0.9, 1.2])
    # scores: ring 1.0 (0.9 fastest in pass 2 -> 1.11), native ~1.0 ... shm > 2x: left out
    rows = tuning.race_rows(recs)
    assert rows[64][0] == tuning.spread_rows(recs)[0]["pick"]
    assert set(rows[64]) == {"ring", "native", "tree"}
    assert "shm" not in rows[64]


def test_race_is_capped_and_a_clear_winner_races_nothing() -> None:
    many = _passes(8, **{a: [1.0 + i / 100] * 3 for i, a in enumerate(sorted(KNOWN))})
    assert len(tuning.race_rows(many)[8]) == race.RACE_MAX
    clear = _passes(8, ring=[1.0] * 3, tree=[2.5] * 3)
    assert tuning.race_rows(clear) == {8: ["ring"]}


def test_race_rows_use_the_tune_borders() -> None:
    entries = report.race_entries({8: ["tree", "native"], 32: ["ring"]})
    assert entries == [(16, ("tree", "native")), (32, ("ring",))]


def test_race_table_roundtrip_keeps_other_world_sizes(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    auto.save_table({2: [(64, "shm")]}, path, race={2: [(64, ("shm", "ring"))]})
    auto.save_table({2: [(64, "shm")], 4: [(64, "ring")]}, path,
                    race={4: [(64, ("ring", "tree", "native"))]})
    picks, raced = auto.load_tune(path)
    assert picks == {2: [(64, "shm")], 4: [(64, "ring")]}
    assert raced == {2: [(64, ("shm", "ring"))], 4: [(64, ("ring", "tree", "native"))]}
    assert auto.load_table(path) == picks
    assert json.loads(path.read_text())["race"]["2"] == [[64, ["shm", "ring"]]]


@pytest.mark.parametrize("section,said", [
    ('[]', '"race" must be an object'),
    ('{"x": []}', "not a world size"),
    ('{"2": []}', "non-empty list"),
    ('{"2": [[64, "ring"]]}', "is not [max_bytes"),
    ('{"2": [[64, ["ring"], 3]]}', "is not [max_bytes"),
    ('{"2": [[-1, ["ring"]]]}', "max_bytes -1"),
    ('{"2": [[true, ["ring"]]]}', "max_bytes True"),
    ('{"2": [[64, []]]}', "1 to 6 distinct"),
    ('{"2": [[64, ["ring", "ring"]]]}', "1 to 6 distinct"),
    ('{"2": [[64, ["ring", "tree", "shm", "native", "rabenseifner", "naive", "ring_pipelined"]]]}',
     "1 to 6 distinct"),
    ('{"2": [[64, ["ring", "warp"]]]}', "unknown algorithm 'warp'"),
    ('{"2": [[64, ["ring", 7]]]}', "unknown algorithm 7"),
    ('{"2": [[64, ["auto"]]]}', "unknown algorithm 'auto'"),
    ('{"2": [[64, ["ring"]], [64, ["tree"]]]}', "max_bytes repeats"),
])
def test_damaged_race_section_is_one_line(tmp_path: Path, section: str, said: str) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"2": [[64, "ring"]], "race": ' + section + "}")
    with pytest.raises(UserError) as err:
        auto.load_tune(path)
    assert said in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError):
        auto.load_table(path)  # the picks alone are refused too: the file is one thing


def test_candidates_for_a_size() -> None:
    table = {2: [(16, ("tree", "native")), (1024, ("ring", "gone", "shm")), (4096, ("ring",))]}
    assert auto.race_candidates(table, 2, 8, "tree", KNOWN) == ("tree", "native")
    # the pick first (a stale table can disagree), names auto cannot run dropped
    assert auto.race_candidates(table, 2, 100, "shm", KNOWN) == ("shm", "ring")
    assert auto.race_candidates(table, 2, 1 << 20, "ring", KNOWN) == ("ring",)  # last row
    assert auto.race_candidates(table, 4, 8, "tree", KNOWN) == ("tree",)  # no row for p = 4
    assert auto.race_candidates({}, 2, 8, "tree", KNOWN) == ("tree",)


def test_race_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auto.RACE_ENV, raising=False)
    assert auto.race_setting() is True
    monkeypatch.setenv(auto.RACE_ENV, "0")
    assert auto.race_setting() is False
    for bad in ("", "yes", "2", "1 "):
        monkeypatch.setenv(auto.RACE_ENV, bad)
        with pytest.raises(UserError, match="DISTNET_AUTO_RACE must be 0 or 1"):
            auto.race_setting()


def test_timed_calls_bounds() -> None:
    assert race.timed_calls(8) == race.MAX_TIMED == 48
    assert race.timed_calls(128 << 10) == 48
    assert race.timed_calls(512 << 10) == 16
    assert race.timed_calls((8 << 20) // 14) == 12  # 14 calls' worth, down to a multiple of 4
    assert race.timed_calls(1 << 20) == race.MIN_TIMED == 8
    assert race.timed_calls(64 << 20) == race.MIN_TIMED
    for n in (1, 3, 1000, 5 << 20, 1 << 30):
        assert race.timed_calls(n) % race.PASSES == 0
        assert race.timed_calls(n) >= 2 * race.PASSES  # no pass's median is one call


def test_the_pick_stays_unless_beaten_in_every_pass() -> None:
    assert race.winner([[1.04, 1.0, 1.2]] * 4) == 0  # within 5 %: a near-tie is the tune's
    assert race.winner([[1.06, 1.0, 1.01]] * 4) == 1  # beaten every time
    assert race.winner([[2.0, 1.2, 1.0]] * 4) == 2  # of those that beat it, the fastest
    assert race.winner([[1.0, 1.0]]) == 0
    # faster pooled, and by far in three passes, but not in the fourth: the pick stays
    assert race.winner([[1.0, 0.5]] * 3 + [[1.0, 1.0]]) == 0
    assert race.winner([[1.0, 0.5]] * 3 + [[1.0, 0.9]]) == 1
    # equal totals: the tune's order
    assert race.winner([[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]]) == 1


class _OneRank:
    """Enough of a communicator for a race on one rank (Allreduce of one rank: a no-op)."""

    rank, size = 0, 1

    def Allreduce(self, sendbuf, recvbuf, op=None) -> None:  # noqa: N802 - MPI's name
        pass


def test_race_runs_each_candidate_in_a_block_and_keeps_the_fastest() -> None:
    import time

    ran: list[str] = []

    def fake(name: str, delay_s: float):
        def fn(comm, buf, op=None) -> None:
            ran.append(name)
            time.sleep(delay_s)
        return fn

    r = race.Race(("slow", "fast"), (fake("slow", 2e-3), fake("fast", 0.0)), 8)
    got = [r.step(_OneRank(), None) for _ in range(2 * (race.PASSES * race.WARM + r.timed))]
    assert got[:-1] == [None] * (len(got) - 1) and got[-1] == 1
    block = race.WARM + r.timed // race.PASSES
    assert ran == (["slow"] * block + ["fast"] * block) * race.PASSES
    # the warm-up calls are not timed
    assert [[len(t) for t in by_pass] for by_pass in r.times] == [
        [r.timed // race.PASSES] * race.PASSES] * 2
    assert len(r.pass_medians_s) == race.PASSES
    assert all(slow > fast for slow, fast in r.pass_medians_s)
    assert r.medians_s[0] > r.medians_s[1]


def test_race_needs_two_candidates() -> None:
    with pytest.raises(ValueError):
        race.Race(("ring",), (lambda comm, buf: None,), 8)
