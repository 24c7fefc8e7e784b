"""``eddl status`` lines of a meta-learning job: few-shot score, bytes per device per round."""

from __future__ import annotations

from eddl.cli.statusview import job_placement, meta_lines

META = {
    "metric": "accuracy",
    "shots": 5,
    "held_out": 10,
    "few_shot": 0.93,
    "best_few_shot": 0.95,
    "uploads": 60,
    "sparse_uploads": 60,
    "upload_bytes_per_device_round": 2181.4,
    "dense_model_bytes": 15648,
    "device_of": {"worker-1": 0, "gw.mcu0": 2},
}


def test_a_running_or_ended_job_shows_few_shot_and_wire_bytes() -> None:
    lines = meta_lines(META)
    assert lines[0] == "few-shot accuracy at k = 5 on 10 held-out devices: 93.00% (best 95.00%)"
    assert "2,181 B per device per round on the wire" in lines[1]
    assert lines[2] == "device tasks  gw.mcu0: 2, worker-1: 0"
    assert job_placement({"meta": META}) == lines  # running: the summary's meta
    assert job_placement({"result": {"meta": META}}) == lines  # ended: the result's


def test_mse_is_shown_as_a_number_and_missing_figures_as_a_dash() -> None:
    lines = meta_lines({**META, "metric": "mse", "few_shot": 1.2345, "best_few_shot": None})
    assert lines[0].endswith(": 1.2345 (best -)")
    assert job_placement({}) == []
