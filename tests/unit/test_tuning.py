"""--tune over several passes: the pick is best in the typical pass (the median over passes);
spread and near-ties are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distnet.allreduce import auto
from distnet.bench import report, tuning


def _rec(name: str, size: int, t: float) -> dict:
    return {"algorithm": name, "bytes": size, "median_s": t, "ranks": 2}


def test_pick_is_best_on_average_not_best_once() -> None:
    # ring wins pass 1 by a hair, loses the other two clearly: rabenseifner is the pick.
    passes = [[_rec("ring", 64, 1.0), _rec("rabenseifner", 64, 1.01)],
              [_rec("ring", 64, 1.5), _rec("rabenseifner", 64, 1.0)],
              [_rec("ring", 64, 1.4), _rec("rabenseifner", 64, 1.0)]]
    combined = tuning.combine_passes(passes)
    ring = next(r for r in combined if r["algorithm"] == "ring")
    assert ring["pass_medians_s"] == [1.0, 1.5, 1.4]
    assert ring["median_s"] == pytest.approx(1.3) and ring["worst_s"] == pytest.approx(1.5)
    assert ring["spread"] == pytest.approx(0.5 / 1.3)
    assert report.tune_entries(combined) == [(64, "rabenseifner")]
    (row,) = tuning.spread_rows(combined)
    assert row["pick"] == "rabenseifner" and row["spread"] == pytest.approx(0.01 / (3.01 / 3))
    assert row["mean_s"] == pytest.approx(3.01 / 3)


def test_mean_decides_where_the_worst_pass_would_not() -> None:
    # a: one bad pass (1.3) but the lower mean (1.1); b: steady 1.2. The worst-pass rule chose b.
    combined = tuning.combine_passes([[_rec("a", 8, 1.0), _rec("b", 8, 1.2)],
                                      [_rec("a", 8, 1.0), _rec("b", 8, 1.2)],
                                      [_rec("a", 8, 1.3), _rec("b", 8, 1.2)]])
    (row,) = tuning.spread_rows(combined)
    assert row["pick"] == "a" and report.tune_entries(combined) == [(8, "a")]


def test_score_is_the_median_ratio_to_each_pass_fastest() -> None:
    # pass 2 ran under three times the load: raw times would let it decide (b: 2.0 vs a: 2.05)
    combined = tuning.combine_passes([[_rec("a", 8, 1.0), _rec("b", 8, 1.1)],
                                      [_rec("a", 8, 3.1), _rec("b", 8, 2.9)],
                                      [_rec("a", 8, 1.0), _rec("b", 8, 1.2)]])
    got = tuning.scores(combined)[8]
    assert got["a"] == pytest.approx(1.0)  # ratios 1.0, 3.1/2.9, 1.0
    assert got["b"] == pytest.approx(1.1)  # ratios 1.1, 1.0, 1.2
    (row,) = tuning.spread_rows(combined)
    assert row["pick"] == "a" and row["score"] == pytest.approx(got["a"])


def test_one_disturbed_pass_does_not_decide() -> None:
    # a is 5 % ahead in two passes; a burst hit it in the third (2x). The mean of the ratios
    # (a 1.33, b 1.03) would pick b; the median of them (a 1.0, b 1.05) keeps a.
    combined = tuning.combine_passes([[_rec("a", 8, 1.0), _rec("b", 8, 1.05)],
                                      [_rec("a", 8, 1.0), _rec("b", 8, 1.05)],
                                      [_rec("a", 8, 2.0), _rec("b", 8, 1.0)]])
    (row,) = tuning.spread_rows(combined)
    assert row["pick"] == "a" and row["score"] == 1.0


def test_equal_scores_go_to_the_lower_mean_time() -> None:
    # two passes each won by a different algorithm by the same margin: both score 1.125
    # (the median of two is their mean); b's times are lower overall, so b is the pick.
    combined = tuning.combine_passes([[_rec("a", 8, 2.5), _rec("b", 8, 2.0)],
                                      [_rec("a", 8, 1.0), _rec("b", 8, 1.25)]])
    got = tuning.scores(combined)[8]
    assert got["a"] == got["b"] == 1.125
    (row,) = tuning.spread_rows(combined)
    assert row["pick"] == "b"


def test_runner_up_kept_only_within_noise() -> None:
    noisy = tuning.combine_passes([[_rec("a", 8, 1.0), _rec("b", 8, 1.25)],
                                   [_rec("a", 8, 1.3), _rec("b", 8, 1.1)]])
    (row,) = tuning.spread_rows(noisy)
    # means 1.15 and 1.175: a is the pick, b is 2 % behind, within a's spread (26 %)
    assert row["pick"] == "a" and row["runner_up"] == "b"
    assert row["runner_up_mean_s"] == pytest.approx(1.175)
    assert row["runner_up_spread"] == pytest.approx(0.15 / 1.175)
    steady = tuning.combine_passes([[_rec("a", 8, 1.0), _rec("b", 8, 2.0)],
                                    [_rec("a", 8, 1.0), _rec("b", 8, 2.0)]])
    (row,) = tuning.spread_rows(steady)
    assert row["runner_up"] is None and row["runner_up_gap"] == pytest.approx(1.0)


def test_spread_is_saved_and_ignored_by_auto(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    auto.save_table({2: [(64, "shm")]}, path, spread={2: [{"bytes": 64, "pick": "shm"}]})
    auto.save_table({2: [(64, "shm")], 4: [(64, "ring")]}, path,
                    spread={4: [{"bytes": 64, "pick": "ring"}]})
    raw = json.loads(path.read_text())
    assert set(raw["spread"]) == {"2", "4"}  # the other world size's spread is kept
    assert auto.load_table(path) == {2: [(64, "shm")], 4: [(64, "ring")]}
