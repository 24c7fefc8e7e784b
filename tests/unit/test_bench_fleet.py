"""The fleet simulator's parts: device profiles, paced links, shards, the leader's figures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from bench.fleet import parse_figures
from bench.fleet_devices import (
    PROFILES_DIR,
    DeviceProfile,
    LinkPacer,
    SimExecutor,
    load_profiles,
    shard,
)
from eddl.worker.executor import TaskSpec

PROFILE = DeviceProfile("p", 100.0, 1000.0, 4000.0, 0.2)


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_a_transfer_takes_half_the_round_trip_plus_its_bytes_over_the_bandwidth() -> None:
    pacer = LinkPacer(PROFILE, Clock())
    assert pacer.seconds(500, "upload") == pytest.approx(0.1 + 0.5)
    assert pacer.seconds(500, "download") == pytest.approx(0.1 + 0.125)
    assert pacer.seconds(0, "upload") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="-1 bytes"):
        pacer.seconds(-1, "upload")


def test_transfers_in_one_direction_queue_behind_each_other_and_not_the_other_way() -> None:
    clock = Clock()
    pacer = LinkPacer(PROFILE, clock)
    assert pacer.reserve(900, "upload") == pytest.approx(1.0)
    assert pacer.reserve(900, "upload") == pytest.approx(2.0)  # behind the first
    assert pacer.reserve(3600, "download") == pytest.approx(1.0)  # its own direction
    clock.now += 5.0  # the link went idle meanwhile
    assert pacer.reserve(900, "upload") == pytest.approx(1.0)


def test_the_example_profiles_load_and_differ() -> None:
    profiles = load_profiles(sorted(PROFILES_DIR.glob("*.json")), "sgd")
    assert len(profiles) == 3
    assert len({p.samples_per_second for p in profiles}) == 3
    lsgd = load_profiles(sorted(PROFILES_DIR.glob("*.json")), "lsgd")
    assert [p.samples_per_second for p in lsgd] == [p.samples_per_second / 2 for p in profiles]


def test_a_profile_without_a_link_or_speed_is_refused_with_what_to_run(tmp_path: Path) -> None:
    data = json.loads((PROFILES_DIR / "phone-wifi.json").read_text())
    no_link = tmp_path / "no-link.json"
    no_link.write_text(json.dumps({**data, "network": []}))
    with pytest.raises(ValueError, match="eddl profile --probe"):
        load_profiles([no_link], "sgd")
    no_speed = tmp_path / "no-speed.json"
    no_speed.write_text(json.dumps({**data, "compute": []}))
    with pytest.raises(ValueError, match="eddl profile --benchmark"):
        load_profiles([no_speed], "sgd")
    zero = tmp_path / "zero.json"
    link = {**data["network"][0], "upload_bytes_per_second": 0}
    zero.write_text(json.dumps({**data, "network": [link]}))
    with pytest.raises(ValueError, match="upload_bytes_per_second must be a positive"):
        load_profiles([zero], "sgd")
    with pytest.raises(ValueError, match="no device profiles"):
        load_profiles([], "sgd")
    not_json = tmp_path / "bad.json"
    not_json.write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_profiles([not_json], "sgd")


def test_shards_split_a_fleet_without_overlap_and_refuse_a_bad_index() -> None:
    parts = [set(shard(10, 3, i)) for i in range(3)]
    assert set().union(*parts) == set(range(10))
    assert sum(len(p) for p in parts) == 10
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        shard(10, 3, 3)
    with pytest.raises(ValueError, match=">= 1"):
        shard(0, 1, 0)


def _task(version: int, samples: int) -> TaskSpec:
    return TaskSpec("job", f"t{version}", version, "d", tuple(range(samples)), "sgd", "{}", "{}")


async def test_a_virtual_device_pays_its_pull_once_per_version_and_keeps_the_shape() -> None:
    fast = DeviceProfile("fast", 1e4, 1e9, 1e9, 0.0)
    executor = SimExecutor(fast, LinkPacer(fast))
    params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    empty = np.zeros((0, 0), np.uint8), np.zeros(0, np.int64)
    assert not executor.wants_samples(_task(1, 10))
    first = await executor.execute(_task(1, 10), params, *empty)
    again = await executor.execute(_task(1, 10), params, *empty)
    assert first.samples == 10 and first.train_seconds == pytest.approx(1e-3)
    assert {k: v.shape for k, v in first.params.items()} == {"w": (3, 2), "b": (2,)}
    assert np.all(first.params["w"] < 1.0) and np.all(np.isfinite(first.params["w"]))
    assert np.array_equal(first.params["w"], again.params["w"])  # deterministic
    assert params["w"][0, 0] == 1.0  # the global model is left alone
    # The second task of the same version pulled nothing: only the upload is paced.
    assert again.link_seconds < first.link_seconds


def test_the_leaders_figures_are_read_from_its_metrics_text() -> None:
    text = "\n".join(
        [
            "# TYPE eddl_leader_updates_accepted counter",
            'eddl_leader_updates_accepted_total{outcome="aggregated"} 7.0',
            'eddl_leader_updates_accepted_total{outcome="stale-folded"} 3.0',
            "# TYPE eddl_leader_nodes_alive gauge",
            'eddl_leader_nodes_alive{role="worker"} 50.0',
            'eddl_leader_nodes_alive{role="leader"} 2.0',
            "# TYPE eddl_leader_command_seconds histogram",
            'eddl_leader_command_seconds_bucket{command="submit_update",le="+Inf"} 10.0',
            'eddl_leader_command_seconds_count{command="submit_update"} 10.0',
            'eddl_leader_command_seconds_sum{command="submit_update"} 0.02',
            'eddl_leader_command_seconds_bucket{command="_hand_out",le="+Inf"} 12.0',
            'eddl_leader_command_seconds_count{command="_hand_out"} 12.0',
            'eddl_leader_command_seconds_sum{command="_hand_out"} 0.006',
            "",
        ]
    )
    got = parse_figures(text)
    assert got.updates == 10.0 and got.alive == 50.0
    assert got.seconds(("_hand_out", "_hand_out_many")) == pytest.approx(0.006)
    assert got.command_counts["submit_update"] == 10.0


def test_pacing_sleeps_what_it_booked() -> None:
    fast = DeviceProfile("fast", 1.0, 1e6, 1e6, 0.0)
    pacer = LinkPacer(fast)
    assert asyncio.run(pacer.transfer(1000, "upload")) == pytest.approx(1e-3, abs=5e-4)
