"""`python -m distnet.whatif`: the happy path on this machine's model and on a fat-tree, the
calibration fit, and every kind of bad input as one line with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distnet.analysis import whatif
from distnet.common.errors import UserError
from tests.proc import PYTHON, run


def write_metrics(path, n_steps: int = 4, nbytes: int = 2 * 1024 * 1024, **extra) -> str:
    lines = []
    for i in range(1, n_steps + 1):
        rec = {"schema": 1, "event": "step", "epoch": 0, "step": i, "forward_s": 0.002,
               "backward_s": 0.004, "allreduce_s": 0.003, "optim_s": 0.001, "bytes": nbytes,
               "algorithm": "ring", "samples": 64, "local_samples": 32, "world_size": 2}
        rec.update(extra)
        lines.append(rec)
    lines.append({"schema": 1, "event": "done", "world_size": 2, "param_count": nbytes // 4,
                  "grad_bytes": nbytes, "algorithm": "ring"})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


def bench_records(alpha: float, beta: float, gamma: float) -> list[dict]:
    from distnet.allreduce.cost import cost_s

    out = []
    for alg in ("ring", "recursive_doubling", "tree"):
        for p in (2, 4):
            for n in (4096, 1 << 20, 16 << 20):
                t = cost_s(alg, p, n, alpha, beta, gamma)
                out.append({"algorithm": alg, "bytes": n, "ranks": p, "avg_s": t,
                            "min_s": t, "max_s": t, "algbw_gbps": n / t / 1e9})
    return out


def test_local_projection_table_json_and_plot(tmp_path, capsys):
    metrics = write_metrics(tmp_path / "run.jsonl")
    out_json, png = tmp_path / "p.json", tmp_path / "p.png"
    code = whatif.main(["--metrics", metrics, "--topology", "local", "--link-gbps", "100",
                        "--ranks", "2,4,8", "--algorithms", "ring,tree", "--json", str(out_json),
                        "--plot", str(png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "star-8" in text and "ring" in text and "tree" in text and "crossover" not in text
    result = json.loads(out_json.read_text())
    assert [(r["algorithm"], r["ranks"]) for r in result["rows"]] == [
        ("ring", 2), ("ring", 4), ("ring", 8), ("tree", 2), ("tree", 4), ("tree", 8)]
    assert all(r["step_s"] >= r["compute_s"] for r in result["rows"])
    assert png.stat().st_size > 10_000


def test_fat_tree_projection_and_topology_comparison(tmp_path, capsys):
    metrics = write_metrics(tmp_path / "run.jsonl")
    result = whatif.run(["--metrics", metrics, "--topology", "fat-tree:k=4", "--ranks", "4,16",
                         "--algorithms", "ring,hierarchical", "--placement", "scattered",
                         "--routing", "ideal", "--compare-topologies"])
    assert {r["algorithm"] for r in result["rows"]} == {"ring", "hierarchical"}
    table = result["comparison"]
    assert {(r["routing"], r["placement"]) for r in table} == {
        ("ecmp", "packed"), ("ecmp", "scattered"), ("ideal", "packed"), ("ideal", "scattered")}
    assert len({r["topology"] for r in table}) == 5
    assert "one model on several clusters" in capsys.readouterr().out


def test_calibration_is_fitted_from_the_bench_file(tmp_path):
    alpha, beta, gamma = 3e-6, 1 / 5e9, 2e-10
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench_records(alpha, beta, gamma)))
    cal = whatif.load_calibration(str(path))
    assert (cal.alpha_s, cal.beta_s_per_byte, cal.gamma_s_per_byte) == pytest.approx(
        (alpha, beta, gamma), rel=1e-6)
    assert cal.bandwidth_gbps == pytest.approx(40.0)
    assert "40.0 Gb/s" in whatif.describe_calibration(cal)


def test_local_topology_uses_the_calibrated_bandwidth(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_records(3e-6, 1 / 5e9, 2e-10)))
    metrics = write_metrics(tmp_path / "run.jsonl")
    result = whatif.run(["--metrics", metrics, "--topology", "local", "--calibration", str(bench),
                         "--ranks", "2,4", "--algorithms", "ring", "--cores", "4"])
    from distnet.allreduce.cost import ring

    nbytes = 2 * 1024 * 1024
    for row in result["rows"]:
        expected = ring(row["ranks"], nbytes).seconds(3e-6, 1 / 5e9, 2e-10)
        assert row["comm_s"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("case, words", [
    ("old", "no schema version"),
    ("newer", "schema 2"),
    ("unprofiled", "rerun training with --profile"),
    ("topology", "moebius"),
    ("odd-k", "k must be an even integer"),
    ("algorithm", "no-such-algorithm"),
    ("ranks", "--ranks"),
    ("local", "--calibration"),
    ("calibration", "lacks algorithm, bytes, ranks or min_s"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, words):
    metrics = write_metrics(tmp_path / "run.jsonl")
    args = ["--metrics", metrics, "--topology", "fat-tree:k=4", "--ranks", "4"]
    if case == "old":
        (tmp_path / "run.jsonl").write_text(json.dumps({"event": "step", "forward_s": 1}) + "\n")
    elif case == "newer":
        write_metrics(tmp_path / "run.jsonl", schema=2)
    elif case == "unprofiled":
        (tmp_path / "run.jsonl").write_text(
            json.dumps({"schema": 1, "event": "epoch", "epoch": 1}) + "\n")
    elif case == "topology":
        args[3] = "moebius:k=4"
    elif case == "odd-k":
        args[3] = "fat-tree:k=5"
    elif case == "algorithm":
        args += ["--algorithms", "ring,no-such-algorithm"]
    elif case == "ranks":
        args[5] = "4,x"
    elif case == "local":
        args[3] = "local"
    elif case == "calibration":
        (tmp_path / "bench.json").write_text('[{"algorithm": "ring"}]')
        args += ["--calibration", str(tmp_path / "bench.json")]
    assert whatif.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m distnet.whatif: error: ")
    assert words in err[0]


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    res = run([PYTHON, "-m", "distnet.whatif", "--metrics", str(tmp_path / "none.jsonl"),
               "--topology", "local"], timeout_s=60)
    assert res.returncode == 2 and not res.timed_out
    assert res.stderr.strip().startswith("python -m distnet.whatif: error: cannot read")
    assert "Traceback" not in res.stderr


def test_too_many_ranks_for_the_topology(tmp_path):
    metrics = write_metrics(tmp_path / "run.jsonl")
    with pytest.raises(UserError, match="do not fit"):
        whatif.run(["--metrics", metrics, "--topology", "fat-tree:k=4", "--ranks", "32",
                    "--algorithms", "ring"])


@pytest.mark.parametrize("extra, words", [
    (["--bucket-mb", "nan"], "--bucket-mb must be a finite number"),
    (["--first-bucket-mb", "inf"], "--first-bucket-mb must be a finite number"),
    (["--bucket-mb", "1e300"], "--bucket-mb must be in"),
    (["--alpha-us", "nan"], "--alpha-us must be a finite number"),
    (["--link-gbps", "nan"], "--link-gbps must be a finite number"),
    (["--percentile", "nan"], "--percentile must be a finite number"),
    (["--cores", "0"], "--cores must be >= 1"),
    (["--seed", "-1", "--placement", "random"], "--seed must be in"),
    (["--batch-per-rank", "-5"], "--batch-per-rank must be in"),
])
def test_hostile_numbers_are_one_line_and_exit_2(tmp_path, capsys, extra, words):
    metrics = write_metrics(tmp_path / "run.jsonl")
    args = ["--metrics", metrics, "--topology", "fat-tree:k=4", "--ranks", "4", *extra]
    assert whatif.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m distnet.whatif: error: ")
    assert words in err[0]


def test_outputs_never_overwrite_the_metrics_input(tmp_path, capsys):
    metrics = write_metrics(tmp_path / "run.jsonl")
    before = Path(metrics).read_bytes()
    args = ["--metrics", metrics, "--topology", "fat-tree:k=4", "--ranks", "4", "--json", metrics]
    assert whatif.main(args) == 2
    assert "is the same file as the input --metrics 1" in capsys.readouterr().err
    assert Path(metrics).read_bytes() == before
