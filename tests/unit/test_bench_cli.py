"""`python -m distnet.bench` end to end under mpirun (2 ranks), each run under a hard timeout."""

import json
from pathlib import Path

import pytest

from tests.proc import mpi_python


def test_tiny_bench_writes_checked_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = mpi_python(2, "-m", "distnet.bench", "--sizes", "8,4KiB", "--iters", "2",
                     "--json", str(out), timeout_s=120)
    assert not res.timed_out and res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("# targets") == 1  # the table comes from rank 0 only
    assert res.stdout.count("# placement (CPUs each rank may run on): ") == 1
    records = json.loads(out.read_text())
    assert [len(r["cpus"]) > 0 for r in records[0]["placement"]] == [True, True]
    assert {r["bytes"] for r in records} == {8, 4096}
    assert {"native", "auto"} <= {r["algorithm"] for r in records}
    for r in records:
        assert r["ranks"] == 2 and r["iters"] == 2
        assert 0 < r["min_s"] <= r["avg_s"] <= r["max_s"]
        assert r["busbw_gbps"] == r["algbw_gbps"]  # 2(p-1)/p = 1 at p = 2
        assert r["ratio_to_native"] > 0
        assert r["mem_copy_gbps_rank0_alone"] > 0


def test_tune_writes_table_auto_reads(tmp_path: Path) -> None:
    table = tmp_path / "tune.json"
    res = mpi_python(2, "-m", "distnet.bench", "--sizes", "8,1KiB", "--iters", "2",
                     "--tune", str(table), "--tune-passes", "2", timeout_s=120)
    assert not res.timed_out and res.returncode == 0, res.stdout + res.stderr
    saved = json.loads(table.read_text())
    rows = saved["2"]
    assert [r["bytes"] for r in saved["spread"]["2"]] == [8, 1024]
    assert [b for b, _ in rows] == sorted(b for b, _ in rows) and rows[-1][0] == 1024
    assert "n/a  auto within 10%" in res.stdout  # judged in a later run, not in the tune run
    out = tmp_path / "judged.json"
    res = mpi_python(2, "-m", "distnet.bench", "--sizes", "8,1KiB", "--iters", "2",
                     "--algorithms", "native,ring,auto", "--json", str(out),
                     env={"DISTNET_TUNE_FILE": str(table)}, timeout_s=120)
    assert not res.timed_out and res.returncode == 0, res.stdout + res.stderr
    autos = [r for r in json.loads(out.read_text()) if r["algorithm"] == "auto"]
    assert [r["bytes"] for r in autos] == [8, 1024]
    for r in autos:  # timed interleaved with the algorithms it could have picked
        assert set(r["interleaved_median_s"]) == {"native", "ring"}
        assert r["best_algorithm"] in {"native", "ring"} and r["paired_ratio"] > 0
        assert r["rounds"] == len(r["round_medians_s"])
        assert set(r["paired_ratios"]) == {"native", "ring"}
        assert r["paired_worst"] == max(r["paired_ratios"].values())
        assert r["paired_ratios"][r["best_algorithm"]] == r["paired_ratio"]
    assert "auto within 10%" in res.stdout and "n/a  auto" not in res.stdout
    assert ", paired (" in res.stdout and "pooled medians:" in res.stdout


def test_damaged_tune_file_is_one_line_exit_2(tmp_path: Path) -> None:
    table = tmp_path / "tune.json"
    table.write_text('{"2": [[64, "warp_drive"]]}')
    res = mpi_python(2, "-m", "distnet.bench", "--sizes", "8", "--iters", "2",
                     "--algorithms", "native,auto", env={"DISTNET_TUNE_FILE": str(table)},
                     timeout_s=60)
    assert not res.timed_out and res.returncode == 2, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "warp_drive" in errors[0], res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_algorithm_is_one_line_on_every_rank() -> None:
    res = mpi_python(3, "-m", "distnet.bench", "--algorithms", "native,bogus",
                     "--sizes", "8", timeout_s=60)
    assert not res.timed_out and res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bogus" in errors[0] and "native" in errors[0], res.stderr
    assert "Traceback" not in res.stderr


def test_bad_flag_exits_2_without_traceback() -> None:
    res = mpi_python(2, "-m", "distnet.bench", "--sizes", "4QB", timeout_s=60)
    assert not res.timed_out and res.returncode == 2
    assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr


def test_overlap_subcommand_reports_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "overlap.json"
    res = mpi_python(2, "-m", "distnet.bench", "overlap", "--hidden", "32,32", "--steps", "2",
                     "--warmup", "0", "--bucket-mb", "0.001", "--first-bucket-mb", "0.0005",
                     "--json", str(out), timeout_s=120)
    assert not res.timed_out and res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    assert result["buckets"] > 1 and result["ranks"] == 2
    for key in ("overlap_on_s", "overlap_off_s", "overlap_thread_s", "compute_only_s"):
        assert result[key] > 0
    assert res.stdout.count("speedup on/off") == 1


def test_nccl_flags_csv_trace_and_busbw_gate(tmp_path: Path) -> None:
    out, trace = tmp_path / "b.csv", tmp_path / "t.json"
    res = mpi_python(2, "-m", "distnet.bench", "-b", "8", "-e", "64", "-f", "8",
                     "--algorithms", "native,ring", "--iters", "2", "--csv", str(out),
                     "--trace", str(trace), "--min-busbw", "1e9", timeout_s=120)
    assert not res.timed_out and res.returncode == 3, res.stdout + res.stderr
    assert "FAIL min-busbw: ring" in res.stdout and "out-of-place" in res.stdout
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 and all(r.endswith(",0,") or ",0," in r for r in rows[1:])
    evs = json.loads(trace.read_text())["traceEvents"]
    assert {e["pid"] for e in evs} == {0, 1}
    assert any("ring 64B out-of-place" in e.get("args", {}).get("algorithm", "") for e in evs)
    res = mpi_python(2, "-m", "distnet.bench", "--sizes", "64", "--algorithms", "native",
                     "--iters", "2", "--min-busbw", "0", timeout_s=120)
    assert res.returncode == 0 and "PASS min-busbw: native" in res.stdout


@pytest.mark.parametrize("args, words", [
    (["--sizes", "1000000GiB"], "would need about"),
    (["--sizes", "9" * 400], "larger than"),
    (["--sizes", "8", "--iters", "1000000000000"], "--iters must be at most"),
    (["overlap", "--hidden", "100000,100000"], "would need about"),
    (["overlap", "--bucket-mb", "nan"], "--bucket-mb must be a finite number"),
    (["overlap", "--steps", "1000000000000"], "--steps and --warmup must be at most"),
])
def test_impossible_sizes_and_counts_exit_2(args: list[str], words: str) -> None:
    res = mpi_python(2, "-m", "distnet.bench", *args, timeout_s=120)
    assert not res.timed_out and res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], res.stderr
    assert "Traceback" not in res.stderr


def test_supervisor_refuses_a_negative_timeout() -> None:
    from tests.proc import PYTHON, run

    for value in ("-5", "nan"):
        res = run([PYTHON, "-m", "distnet.ft.supervise", "--timeout-s", value, "--",
                   "--checkpoint-dir", "x"], timeout_s=60)
        assert res.returncode == 2 and "--timeout-s >= 0" in res.stderr, res.stderr
