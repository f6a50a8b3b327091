"""The projection with gradient compression: stage bytes on the wire and measured encode time."""

from __future__ import annotations

import pytest

from distnet.analysis import projection as pj
from distnet.common.errors import UserError
from tests.unit.test_projection import records


def compressed(name: str, stages: list[int], compress_s: float) -> list[dict]:
    return [dict(r, compress=name, wire_stages=stages, compress_s=compress_s)
            if r["event"] == "step" else r for r in records()]


def linear_comm(algorithm: str, ranks: int, nbytes: int) -> float:
    return 1e-3 + 1e-6 * nbytes  # a latency per all-reduce plus a bandwidth term


def test_compressed_profile_pays_each_stage_and_its_compute() -> None:
    plain = pj.profile_from_records(records())
    power = pj.profile_from_records(compressed("powersgd", [300, 200], 0.0005))
    assert power.compressor == "powersgd" and power.stages == (300, 200)
    assert power.label == "+powersgd" and plain.label == ""
    (row_plain,) = pj.project(plain, [8], ["ring"], linear_comm)
    (row_power,) = pj.project(power, [8], ["ring"], linear_comm)
    assert row_plain.comm_s == pytest.approx(1e-3 + 4000e-6)
    assert row_power.comm_s == pytest.approx(2e-3 + 500e-6)  # two latencies, 500 bytes
    assert row_power.compute_s == pytest.approx(row_plain.compute_s + 0.0005)
    assert row_power.algorithm == "ring+powersgd"
    # One rank communicates nothing, compressed or not.
    (solo,) = pj.project(power, [1], ["ring"], linear_comm)
    assert solo.comm_s == 0.0


def test_bucketed_projection_scales_every_stage_per_bucket() -> None:
    fp16 = pj.profile_from_records(compressed("fp16", [4, 2000], 0.0))
    rows = pj.project(fp16, [4], ["ring"], linear_comm, bucket_bytes=1000,
                      first_bucket_bytes=1000)
    # 4 buckets of 1000 gradient bytes: each pays two latencies, the scale's one element (8
    # bytes at this profile's itemsize) and half its bytes.
    sizes = pj.bucket_bytes_list(4000, 8, 1000, 1000)
    assert sizes == [1000] * 4
    per_bucket = (1e-3 + 8e-6) + (1e-3 + 500e-6)
    fwd, bwd, opt = pj.compute_step_s(fp16)
    expected = pj.overlapped_step_s(fwd, bwd, opt, sizes, [per_bucket] * 4)
    assert rows[0].step_overlap_s == pytest.approx(expected)


@pytest.mark.parametrize("stages", [[], [0], ["x"], "300"])
def test_bad_stage_fields_are_one_error(stages: object) -> None:
    with pytest.raises(UserError, match="wire_stages"):
        pj.profile_from_records(compressed("fp16", stages, 0.0))  # type: ignore[arg-type]
