"""Bad input: one clear error line (from rank 0 only), exit status 2, nothing overwritten."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from distnet.common.procgroup import run_job
from tests.faults.harness import BASE_ARGS, Run, train, write_plan
from tests.proc import PYTHON, ROOT, mpirun_cmd
from tests.proc import run as run_cmd

N = 2


def fingerprint(folder: Path) -> dict[str, str]:
    # The lock file names whichever job held the folder last: not a checkpoint's content.
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def assert_clean_error(run: Run, message: str) -> None:
    assert run.result.returncode == 2, run.tail()
    lines = [ln for ln in run.result.stderr.splitlines() if "distnet.train: error" in ln]
    assert len(lines) == 1 and message in lines[0], run.tail()


PLANS: dict[str, tuple[str, str]] = {
    "not_json": ('[{"kind": "crash", "rank": 1', "not valid JSON"),
    "unknown_kind": ('[{"kind": "meteor", "rank": 1, "step": 2}]', "unknown fault kind"),
    "missing_step": ('{"faults": [{"kind": "crash", "rank": 1}]}', "missing step="),
    "bad_type": ('[{"kind": "hang", "rank": "one", "step": 2}]', "rank must be int"),
    "rank_outside_world": ('[{"kind": "crash", "rank": 7, "step": 2}]', "names rank 7"),
    "wrong_shape": ('{"chaos": 3}', "chaos must be an object"),
    "huge_count": ('{"chaos": {"count": 1000000000000}}', "chaos count must be in 0..10000"),
    "deep": ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    "huge_number": ('[{"kind": "slow", "rank": 1, "step": 2, "seconds": 1e400}]',
                    "number 1e400 is out of range"),
    "nan_literal": ('[{"kind": "slow", "rank": 1, "step": 2, "seconds": NaN}]',
                    "NaN is not a number"),
    "huge_int": ('[{"kind": "crash", "rank": 1, "step": ' + "9" * 5000 + "}]", "not valid JSON"),
    "empty_kinds": ('{"chaos": {"kinds": []}}', "non-empty list"),
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_malformed_fault_plan(name: str, tmp_path: Path) -> None:
    text, message = PLANS[name]
    plan = tmp_path / "plan.json"
    plan.write_text(text)
    metrics = tmp_path / "run.jsonl"
    metrics.write_text('{"event": "precious"}\n')
    run = train(tmp_path, "--fault-plan", str(plan), n=N, ft="none")
    assert_clean_error(run, message)
    assert metrics.read_text() == '{"event": "precious"}\n'  # nothing overwritten


@pytest.mark.parametrize("spec,message", [
    ("crash:rank=1", "missing step="),
    ("crash:rank=1:step=2:when=now", "bad field"),
    ("slow:rank=1:step=2:at=checkpoint", "only for crash"),
    ("hang:rank=1:step=2:at=checkpoint", "only for crash"),
    ("crash:rank=1:step=2:at=evaluation", "at=evaluation is only for hang"),
    ("hang:rank=1:step=2:at=allreduce:seconds=-3", "seconds >= 0"),
    ("slow:rank=1:step=2:seconds=nan", "seconds must be a finite number"),
    ("slow:rank=1:step=2:seconds=1e300", "seconds must be <= 86400"),
    ("crash:rank=true:step=2", "rank must be int"),
])
def test_malformed_inject_spec(spec: str, message: str, tmp_path: Path) -> None:
    assert_clean_error(train(tmp_path, "--inject", spec, n=N, ft="none"), message)


def test_ulfm_without_ulfm_support(tmp_path: Path) -> None:
    run = train(tmp_path, n=N, ft="ulfm", ulfm_mpirun=False)
    assert_clean_error(run, "--ft ulfm needs `mpirun --with-ft ulfm")


def test_restart_mode_needs_checkpoints(tmp_path: Path) -> None:
    assert_clean_error(train(tmp_path, n=N, ft="restart"), "needs --checkpoint-dir")


def make_checkpoint(tmp_path: Path, *args: str) -> Path:
    ckpt = tmp_path / "ckpt"
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--max-steps", "3",
                "--checkpoint-every", "3", *args, n=N,
                ft="none", name="first")
    assert run.result.returncode == 0, run.tail()
    return ckpt


def test_checkpoint_from_another_model(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, "--hidden", "16")
    before = fingerprint(ckpt)
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", n=N, ft="none")
    assert_clean_error(run, "checkpoint has hidden [16]")
    assert fingerprint(ckpt) == before


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path)
    (only,) = ckpt.glob("ckpt-*.npz")
    data = bytearray(only.read_bytes())
    data[len(data) // 2] ^= 0xFF
    only.write_bytes(bytes(data))
    before = fingerprint(ckpt)
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", n=N, ft="none")
    assert run.result.returncode == 2, run.tail()
    assert "error" in run.result.stderr and "Traceback" not in run.output
    assert fingerprint(ckpt) == before


def test_chaos_plan_file_is_validated(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"chaos": {"seed": 1, "kinds": ["crash", "gremlin"]}})
    assert_clean_error(train(tmp_path, "--fault-plan", str(plan), n=N, ft="none"),
                       "chaos plan")


# ---- hostile data: refused before allocating, named for what it is -------------------------


def _npz(tmp_path: Path, y: np.ndarray, name: str = "d.npz") -> str:
    path = tmp_path / name
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(len(y), 4)), y=y)
    return str(path)


@pytest.mark.parametrize("args,message", [
    (["--samples", "1000000000"], "--samples 1000000000 would need about"),
    (["--hidden", "100000,100000"], "parameters (48-100000-100000-10) would need about"),
])
def test_unbounded_memory_is_refused_up_front(args: list[str], message: str,
                                              tmp_path: Path) -> None:
    assert_clean_error(train(tmp_path, *args, n=N, ft="none"), message)


def test_one_huge_label_does_not_build_a_huge_model(tmp_path: Path) -> None:
    y = np.arange(200) % 10
    y[7] = 10**6
    run = train(tmp_path, "--data", _npz(tmp_path, y), n=N, ft="none")
    assert_clean_error(run, "labels go up to 1000000 but only 11 distinct values occur")


def test_uint64_label_is_too_large_not_negative(tmp_path: Path) -> None:
    y = (np.arange(200) % 3).astype(np.uint64)
    y[5] = 2**64 - 1
    run = train(tmp_path, "--data", _npz(tmp_path, y), n=N, ft="none")
    assert_clean_error(run, "label 18446744073709551615 of sample 5 is too large")


def test_idx_header_overflow(tmp_path: Path) -> None:
    (tmp_path / "o-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01")
    images = tmp_path / "o-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x08\x03" + b"\xff" * 12)
    run = train(tmp_path, "--data", str(images), n=N, ft="none")
    assert_clean_error(run, "idx file truncated: 16 bytes, header (4294967295, 4294967295, "
                            "4294967295) needs 79228162458924105385300197391")


# ---- outputs: never over an input, never truncating an earlier record ----------------------


def test_metrics_naming_the_data_file_is_refused(tmp_path: Path) -> None:
    data = _npz(tmp_path, np.arange(300) % 3)
    before = Path(data).read_bytes()
    run = train(tmp_path, "--data", data, "--metrics", data, n=N, ft="none")
    assert run.result.returncode == 2 and "Traceback" not in run.output, run.tail()
    assert Path(data).read_bytes() == before


def test_failed_run_keeps_the_previous_metrics(tmp_path: Path) -> None:
    first = train(tmp_path, "--max-steps", "2", n=N, ft="none")
    assert first.result.returncode == 0, first.tail()
    before = (tmp_path / "run.jsonl").read_text()
    died = train(tmp_path, "--inject", "crash:rank=1:step=1", n=N, ft="none")
    assert died.result.returncode != 0
    after = (tmp_path / "run.jsonl").read_text()
    assert after.startswith(before)  # appended to, never truncated
    assert after.count('"event": "done"') == 1


def test_cut_last_line_then_profile_resume(tmp_path: Path) -> None:
    from distnet.analysis.projection import load_profile

    ckpt = str(tmp_path / "ckpt")
    args = ["--profile", "--checkpoint-dir", ckpt, "--checkpoint-every", "5"]
    first = train(tmp_path, *args, "--max-steps", "10", n=N, ft="none")
    assert first.result.returncode == 0, first.tail()
    metrics = tmp_path / "run.jsonl"
    whole = metrics.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    metrics.write_bytes(whole[:last + 30])  # a kill cut the last record short
    run = train(tmp_path, *args, "--resume", "--max-steps", "20", n=N, ft="none")
    assert run.result.returncode == 0 and "Traceback" not in run.output, run.tail()
    lines = metrics.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the cut line is gone, the rest is whole
    assert len(lines) > whole.count(b"\n")
    assert load_profile(str(metrics)).world_size == N


def test_metrics_on_a_full_disk(tmp_path: Path) -> None:
    run = train(tmp_path, "--metrics", "/dev/full", n=N, ft="none")
    assert_clean_error(run, "--metrics /dev/full: cannot write: No space left on device")


# ---- a run that did not finish is never a success ------------------------------------------

BOTH_CRASH = ["--inject", "crash:rank=0:step=2", "--inject", "crash:rank=1:step=2"]


def test_every_rank_died_under_ulfm_is_not_success(tmp_path: Path) -> None:
    # mpirun --with-ft ulfm itself exits 0 here; the launcher must not.
    res = run_cmd(["bash", str(ROOT / "launch" / "ft.sh"), "-n", str(N), *BASE_ARGS,
                   "--metrics", str(tmp_path / "m.jsonl"), *BOTH_CRASH], timeout_s=180,
                  env={"PYTHON": PYTHON,
                       "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}"})
    assert not res.timed_out
    assert res.returncode == 3, res.stderr[-2000:]
    assert "no rank finished the run" in res.stderr
    assert '"event": "done"' not in (tmp_path / "m.jsonl").read_text()


def test_run_job_reports_an_unfinished_run(tmp_path: Path) -> None:
    argv = ["-m", "distnet.train", *BASE_ARGS, "--ft", "ulfm", *BOTH_CRASH]
    plain = run_cmd(mpirun_cmd(N, PYTHON, *argv, ft=True), timeout_s=180)
    job = run_job(mpirun_cmd(N, PYTHON, *argv, ft=True), timeout_s=180)
    assert plain.returncode in (0, 3) and job.returncode == 3, job.stderr[-2000:]
    ok = run_job(mpirun_cmd(N, PYTHON, "-m", "distnet.train", *BASE_ARGS, "--max-steps", "2"),
                 timeout_s=180)
    assert ok.returncode == 0, ok.stderr[-2000:]


# ---- checkpoints: one job per folder, damage always named ----------------------------------


def test_second_job_on_a_locked_checkpoint_dir(tmp_path: Path) -> None:
    from distnet.training import checkpoint

    ckpt = tmp_path / "ckpt"
    held = checkpoint.DirLock(str(ckpt))  # another job holds the folder
    try:
        run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--max-steps", "2", n=N, ft="none")
    finally:
        held.release()
    assert_clean_error(run, f"is in use by another job (pid {os.getpid()} holds the lock")
    assert not list(ckpt.glob("ckpt-*.npz"))


def test_damaged_newest_checkpoint_is_named_with_its_fallback(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path)  # step 3
    more = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", "--max-steps", "6",
                 "--checkpoint-every", "3", n=N, ft="none", name="second")
    assert more.result.returncode == 0, more.tail()
    old, new = sorted(ckpt.glob("ckpt-*.npz"))[-2:]
    data = bytearray(new.read_bytes())
    data[len(data) // 2] ^= 0xFF
    new.write_bytes(bytes(data))
    (ckpt / "ckpt-000000999.npz").mkdir()  # a folder named like a checkpoint: no traceback
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", "--max-steps", "8",
                n=N, ft="none", name="third")
    assert run.result.returncode == 0 and "Traceback" not in run.output, run.tail()
    assert f"checkpoint {new} is damaged (" in run.result.stderr
    assert f"resuming from {old}" in run.result.stderr
    assert "ckpt-000000999.npz is damaged (is a directory" in run.result.stderr


def test_only_checkpoint_damaged_is_not_no_checkpoint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path)
    (only,) = ckpt.glob("ckpt-*.npz")
    only.write_bytes(only.read_bytes()[:100])
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", n=N, ft="none")
    assert_clean_error(run, f"checkpoint {only} is damaged")
    assert "no checkpoint in" not in run.result.stderr


def test_resume_with_another_seed_or_smaller_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    big, small = tmp_path / "big.npz", tmp_path / "small.npz"
    np.savez(big, x=rng.normal(size=(2000, 4)), y=np.arange(2000) % 3)
    np.savez(small, x=rng.normal(size=(100, 4)), y=np.arange(100) % 3)
    ckpt = make_checkpoint(tmp_path, "--data", str(big))  # position 3 steps x 64 = 192
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", "--data", str(big),
                "--seed", "4", n=N, ft="none")
    assert_clean_error(run, "was written with --seed 3, this run has --seed 4")
    run = train(tmp_path, "--checkpoint-dir", str(ckpt), "--resume", "--data", str(small),
                n=N, ft="none")
    assert_clean_error(run, "position 192 is beyond this run's epoch of 80 training samples")


def test_save_over_the_data_is_refused(tmp_path: Path) -> None:
    data = _npz(tmp_path, np.arange(300) % 3)
    before = Path(data).read_bytes()
    run = train(tmp_path, "--data", data, "--save", data, n=N, ft="none")
    assert_clean_error(run, "is the same file as the input --data")
    assert Path(data).read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--lr", "inf"], "--lr"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--seed", "-1"], "--seed must be"),
    (["--momentum", "1.5"], "--momentum"),
])
def test_nonsense_numbers_are_refused_before_training(args: list[str], message: str,
                                                      tmp_path: Path) -> None:
    run = train(tmp_path, *args, n=N, ft="none")
    assert_clean_error(run, message)
    assert "epoch 1/" not in run.result.stdout
