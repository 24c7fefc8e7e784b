"""MetaSource: devices sampled per round, one device task per node, held for the job."""

from __future__ import annotations

from eddl.leader.metasource import MetaSource
from eddl.leader.source import Range


def _source(devices: int = 5, per_round: int = 2, version: list[int] | None = None) -> MetaSource:
    v = version if version is not None else [0]
    source = MetaSource(devices, per_round, seed=7, version=lambda: v[0])
    source.set_workers(["a", "b", "c", "d"])
    return source


def _round(source: MetaSource) -> dict[str, Range]:
    got = {n: source.take(n, 64) for n in ("a", "b", "c", "d")}
    return {n: r for n, r in got.items() if r is not None}


def test_each_round_samples_devices_per_round_nodes_once_each() -> None:
    version = [0]
    source = _source(version=version)
    seen = set()
    for r in range(6):
        version[0] = r
        handed = _round(source)
        assert len(handed) == 2 and set(handed) == set(source.sampled)
        assert all(rng.epoch == r and len(rng) == 1 for rng in handed.values())
        assert _round(source) == {}  # nobody gets a second task in the same round
        seen |= set(handed)
    assert seen == {"a", "b", "c", "d"}


def test_the_same_seed_and_workers_sample_the_same_devices() -> None:
    first, second = _source(), _source()
    assert set(_round(first)) == set(_round(second))


def test_a_node_keeps_its_device_task_and_tasks_stay_below_devices() -> None:
    version = [0]
    source = _source(devices=3, per_round=4, version=version)
    devices: dict[str, int] = {}
    for r in range(3):
        version[0] = r
        for node, rng in _round(source).items():
            assert devices.setdefault(node, rng.start) == rng.start
            assert list(source.indexes(rng)) == [rng.start]
    assert sorted(devices.values()) == [0, 0, 1, 2]  # four nodes, three device tasks
    assert all(t < 3 for t in source.device_of.values())


def test_a_task_taken_back_may_be_handed_again_in_its_round_only() -> None:
    version = [0]
    source = _source(version=version)
    node, rng = next(iter(_round(source).items()))
    source.give_back(rng)
    assert source.take(node, 64) == rng
    source.give_back(rng)
    version[0] = 1
    source.take("x", 1)  # opens round 1
    source.give_back(rng)  # round 0 is closed: nothing to hand again
    assert all(r.epoch == 1 for r in _round(source).values())


def test_no_live_worker_no_task_and_restore_keeps_device_tasks() -> None:
    source = MetaSource(4, 1, seed=0, version=lambda: 0)
    assert source.take("a", 1) is None
    source.set_workers(["a"])
    assert source.take("a", 1) == Range(0, 0, 1)
    state = source.checkpoint()
    again = MetaSource(4, 1, seed=0, version=lambda: 3)
    again.restore(state, [])
    again.set_workers(["b", "a"])
    assert again.device("a") == 0 and again.device("b") == 1
    assert again.left() is None and not again.drained() and again.requeued() == []


def test_a_sampled_node_that_leaves_frees_its_place_in_the_round() -> None:
    source = _source(per_round=1)
    (gone,) = source.sampled
    source.set_workers([n for n in ("a", "b", "c", "d") if n != gone])
    (other,) = source.sampled
    assert other != gone and source.take(other, 8) is not None
    assert _round(source) == {}  # the round's one place is taken
    source.forget_worker(other)  # its node left with the task: the place is free again
    source.set_workers([n for n in ("a", "b", "c", "d") if n not in (gone, other)])
    assert len(_round(source)) == 1
