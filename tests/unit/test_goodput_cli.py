"""`whatif --failures` end to end, and the recovery-cost file as hostile input: the shipped one
loads, every kind of damage is one line with exit status 2."""

from __future__ import annotations

import copy
import json

import pytest

from distnet.analysis import whatif
from distnet.analysis.goodput_report import DEFAULT_COSTS
from distnet.analysis.recovery_costs import fit_line, load_costs
from distnet.common.errors import UserError
from tests.proc import PYTHON, run
from tests.unit.test_whatif_cli import write_metrics

SHIPPED = json.loads(DEFAULT_COSTS.read_text())


def test_shipped_costs_load_and_fit():
    costs = load_costs(str(DEFAULT_COSTS))
    assert costs.job_start_s(4) >= costs.job_start_s(1) > 0
    assert costs.checkpoint_s(64 << 20) > costs.checkpoint_s(1 << 10) > 0
    assert costs.detect_deadline_s > 1.0  # the derived deadline has a 5 s floor
    assert costs.restart_s(16384, 1e6) > costs.restart_s(8, 1e6)


def test_fit_line_keeps_costs_non_negative():
    line = fit_line([0, 1, 2], [1.0, 2.0, 3.0])
    assert (line.intercept, line.slope) == pytest.approx((1.0, 1.0))
    assert fit_line([0, 1, 2], [3.0, 2.0, 1.0]).slope == 0.0  # falling: a constant
    line = fit_line([1, 2, 3], [0.5, 2.0, 3.5])  # negative intercept: through the origin
    assert line.intercept == 0.0 and line.slope > 0
    assert fit_line([5.0], [2.0])(100.0) == 2.0


def damaged(edit):
    doc = copy.deepcopy(SHIPPED)
    edit(doc)
    return doc


BAD_DOCS = {
    "not an object": [1, 2],
    "wrong format": damaged(lambda d: d.update(format="v0")),
    "missing job_start": damaged(lambda d: d.pop("job_start")),
    "negative time": damaged(lambda d: d["checkpoint_write"]["median_s"].__setitem__(0, -1.0)),
    "huge time": damaged(lambda d: d["shrink"]["median_s"].__setitem__(0, 1e300)),
    "string": damaged(lambda d: d["detect"].update(deadline_s="5")),
    "bool": damaged(lambda d: d["detect"].update(crash_s=True)),
    "lengths differ": damaged(lambda d: d["job_start"]["ranks"].append(8)),
    "too many points": damaged(lambda d: d["job_start"].update(ranks=[1] * 65,
                                                               median_s=[1.0] * 65)),
    "zero ranks": damaged(lambda d: d["job_start"]["ranks"].__setitem__(0, 0)),
    "ratio below 1": damaged(lambda d: d.update(checkpoint_bytes_per_param_byte=0.5)),
}


@pytest.mark.parametrize("name", list(BAD_DOCS))
def test_bad_cost_files_are_one_line(tmp_path, name):
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(BAD_DOCS[name]))
    with pytest.raises(UserError):
        load_costs(str(path))


@pytest.mark.parametrize("text", ['{"format": NaN}', "not json", "[" * 100_000, "\xff"])
def test_unparseable_cost_files(tmp_path, text):
    path = tmp_path / "costs.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff")
    with pytest.raises(UserError):
        load_costs(str(path))


def test_nan_in_cost_file_through_the_cli(tmp_path):
    text = json.dumps(SHIPPED).replace('"deadline_s": ', '"deadline_s": NaN, "x": ', 1)
    (tmp_path / "c.json").write_text(text)
    metrics = write_metrics(tmp_path / "run.jsonl")
    res = run([PYTHON, "-m", "distnet.whatif", "--failures", "--metrics", metrics,
               "--topology", "fat-tree:k=4", "--ranks", "8", "--costs",
               str(tmp_path / "c.json")], timeout_s=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m distnet.whatif: error:"), lines


def test_failures_table_json_and_plot(tmp_path, capsys):
    metrics = write_metrics(tmp_path / "run.jsonl")
    out, png = tmp_path / "g.json", tmp_path / "g.png"
    result = whatif.run(["--failures", "--metrics", metrics, "--topology", "fat-tree:k=8",
                         "--ranks", "8,32,128", "--mc-runs", "4", "--ranks-per-node", "2",
                         "--json", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert "restart-optimal" in text and "shrink-grow" in text and "overtakes" in text
    saved = json.loads(out.read_text())
    assert [r["ranks"] for r in saved["rows"]] == [8, 32, 128] == [
        r["ranks"] for r in result["rows"]]
    for r in saved["rows"]:
        assert r["nodes"] == r["ranks"] // 2
        for k, v in r["closed_form"].items():
            assert 0 < v <= 1 and 0 < r["monte_carlo"][k]["mean"] <= 1
        # the default failure rate is Llama 3's: 466 per 54 days on 16,384 GPUs
        assert r["system_mtbf_h"] == pytest.approx(54 * 24 * 16384 / 466 / r["ranks"])
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("flags", [
    ["--node-mtbf-h", "nan"], ["--node-mtbf-h", "0"], ["--mc-runs", "1"], ["--job-days", "0"],
    ["--job-days", "inf"], ["--grow-every-h", "-1"], ["--checkpoint-every", "0"],
    ["--ranks-per-node", "0"], ["--detection", "psychic"], ["--costs", "/nonexistent.json"],
    ["--job-days", "3650", "--grow-every-h", "0.01"],
    ["--node-mtbf-h", "0.01", "--job-days", "3650", "--mc-runs", "10000"],
])
def test_bad_failure_flags_are_one_line(tmp_path, capsys, flags):
    metrics = write_metrics(tmp_path / "run.jsonl")
    code = whatif.main(["--failures", "--metrics", metrics, "--topology", "fat-tree:k=4",
                        "--ranks", "8", *flags])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m distnet.whatif: error:"), err
