"""`python -m topology`: outputs, JSON, plots, and one-line errors with exit status 2."""

import json
from pathlib import Path

import pytest

from tests.proc import PYTHON, run
from topology.calibrate import synthetic_records
from topology.cli import main

K4 = "fat-tree:k=4"


def test_simulate_prints_time_bandwidth_closed_form_and_busiest_links(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulate", "--topology", K4, "--hosts", "16", "--size", "1MiB",
                 "--routing", "ecmp", "--seed", "1", "--link-gbps", "400",
                 "--link-latency-us", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("time", "algbw / busbw", "closed form", "max link util", "busiest links", "->"):
        assert word in out
    assert "sim/closed = 1.000" in out  # packed ring: no link is shared, the closed form holds


def test_simulate_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "steps.png"
    assert main(["simulate", "--topology", K4, "--algorithm", "rabenseifner", "--size", "64KiB",
                 "--placement", "scattered", "--json", "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["hosts"] == 16 and r["algorithm"] == "rabenseifner" and r["bytes"] == 65536
    assert r["time_s"] > 0 and len(r["step_end_s"]) == r["steps"]
    assert png.stat().st_size > 1000


def test_failed_links_and_hierarchical(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--topology", K4, "--algorithm", "hierarchical", "--size", "1MiB",
                 "--fail-links", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["failed_links"] == 2 and r["time_s"] > 0


def test_compare_table_has_a_row_per_combination(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--topology", K4, "--topology", "leaf-spine:leaves=4,spines=2,hosts=4",
                 "--algorithms", "ring,tree", "--sizes", "4KiB,1MiB",
                 "--routings", "ecmp,ideal"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 2 * 2 * 2 * 2


def test_info_scaling_calibrate_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", K4]) == 0
    assert "hosts" in capsys.readouterr().out
    assert main(["scaling"]) == 0
    assert "fat-tree" in capsys.readouterr().out
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(synthetic_records(20e-6, 2e-10, 3e-10, ranks=(2, 4),
                                                 sizes=(4096, 1 << 20))))
    assert main(["calibrate", str(path), "--model", "simple"]) == 0
    out = capsys.readouterr().out
    assert "alpha = 20.000 us" in out and "20/20 points within 20%" in out
    assert main(["bench", "--k", "4"]) == 0
    assert "ratio" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["simulate", "--topology", "fat-tree:k=7"], "even"),
    (["simulate", "--topology", K4, "--link-gbps", "0"], "--link-gbps must be in"),
    (["simulate", "--topology", K4, "--alpha-us", "nan"], "--alpha-us must be a finite number"),
    (["simulate", "--topology", K4, "--gamma-ns-per-byte", "inf"], "--gamma-ns-per-byte"),
    (["simulate", "--topology", K4, "--link-latency-us", "nan"], "--link-latency-us"),
    (["simulate", "--topology", K4, "--placement", "random", "--seed", "-1"], "--seed must"),
    (["simulate", "--topology", K4, "--size", "9" * 400], "larger than"),
    (["compare", "--topology", K4, "--alpha-us", "-5"], "--alpha-us must be in"),
    (["info", "fat-tree:k=100000"], "would need about"),
    (["info", "leaf-spine:leaves=100000,spines=100000,hosts=10"], "would need about"),
    (["info", "clos:pods=4,tors=4,hosts=8,aggs=2,cores=4,oversub=nan"], "not a finite"),
    (["info", "fat-tree:k=4,link_gbps=nan"], "not a finite number"),
    (["bench", "--k", "1000"], "would need about"),
    (["simulate", "--topology", K4, "--hosts", "17"], "17 ranks"),
    (["simulate", "--topology", "torus:k=4"], "unknown network kind"),
    (["simulate", "--topology", K4, "--algorithm", "warp"], "warp"),
    (["simulate", "--topology", K4, "--routing", "magic"], "magic"),
    (["simulate", "--topology", "fat-tree:k"], "key=value"),
    (["simulate", "--topology", K4, "--size", "lots"], "bad size"),
    (["compare", "--sizes", ""], "empty"),
    (["calibrate", "/nonexistent/bench.json"], "cannot read"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("topology: error: ") and words in err[0]


def test_module_entry_point_exits_2_on_error() -> None:
    res = run([PYTHON, "-m", "topology", "simulate", "--topology", "fat-tree:k=3"], timeout_s=60)
    assert res.returncode == 2 and res.stderr.startswith("topology: error: ")


def test_calibration_fit_recovers_alpha_beta_gamma_and_the_sim_agrees() -> None:
    from topology.calibrate import fit, sim_vs_measured

    f = fit(synthetic_records(3e-6, 1e-10, 4e-11, ranks=(2, 3, 5)))
    assert (f.alpha_s, f.beta_s_per_byte, f.gamma_s_per_byte) == pytest.approx(
        (3e-6, 1e-10, 4e-11), rel=1e-6)
    assert f.bandwidth_gbps == pytest.approx(80.0, rel=1e-6)
    checked = sim_vs_measured(f)
    # not exact: at p = 3, 5 the schedules cut 1024 elements into uneven chunks, the forms n/p
    assert max(abs(c["sim_error"]) for c in checked) < 1e-3


@pytest.mark.parametrize("text, words", [
    ("{", "not valid JSON"),
    ('{"records": 3}', "list of benchmark records"),
    ('[{"algorithm": "ring", "bytes": 8}]', "lacks"),
    ('[{"algorithm": "ring", "bytes": 8, "ranks": 2, "avg_s": -1}]', "bad time"),
    ('[{"algorithm": "native", "bytes": 8, "ranks": 2, "avg_s": 1}]', "closed form"),
])
def test_calibrate_rejects_bad_files(tmp_path: Path, text: str, words: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    assert main(["calibrate", str(path)]) == 2
    assert words in capsys.readouterr().err


def test_calibrate_uses_the_chosen_statistic(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    recs = synthetic_records(5e-6, 2e-10, 0.0, ranks=(2, 4), sizes=(4096, 1 << 20))
    for r in recs:
        r["min_s"], r["avg_s"] = r["avg_s"], 10 * r["avg_s"]  # noisy mean, clean minimum
    path = tmp_path / "b.json"
    path.write_text(json.dumps(recs))
    assert main(["calibrate", str(path), "--stat", "min_s", "--model", "simple"]) == 0
    assert "alpha = 5.000 us" in capsys.readouterr().out
    assert main(["calibrate", str(path), "--stat", "p99"]) == 2
