"""Bad input: one clear error line (from rank 0 only), exit status 2, nothing overwritten."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.faults.harness import Run, train, write_plan

N = 2


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


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
