"""The updates a group update folds, on the leader: read from the push header's
``stats.workers`` (bounded), checked against the task, carried to the root's async rule, and
summed by a sub-leader's relay; a refusal changes nothing."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import numpy as np
import pytest

from eddl.leader.aggregator import Aggregator
from eddl.leader.errors import InvalidArgumentError, UpdateRejectedError
from eddl.leader.ledger import Task
from eddl.leader.membership import Node, Role
from eddl.leader.relay import RelaySink
from eddl.leader.servicers.upload import read_head
from eddl.leader.source import Range
from eddl.leader.updates import check_update
from eddl.leader.upstream import UpstreamTask
from eddl.learn.aggregation import MAX_FOLDS
from eddl.proto.v1 import cluster_pb2, common_pb2


def model(value: float) -> dict[str, np.ndarray]:
    return {"W0": np.full((3, 2), value, np.float32), "b0": np.full(2, value, np.float32)}


async def _chunks(workers: int) -> AsyncIterator[cluster_pb2.UpdateChunk]:
    env = common_pb2.Envelope(job_id="job-1", model_version=2, term=1, node_id="sub0")
    stats = cluster_pb2.TaskStats(samples=64, seconds=1.0, workers=workers)
    header = cluster_pb2.UpdateHeader(envelope=env, task_id="t1", num_samples=64, stats=stats)
    yield cluster_pb2.UpdateChunk(header=header)


@pytest.mark.parametrize(("workers", "folds"), [(0, 1), (1, 1), (16, 16), (MAX_FOLDS, MAX_FOLDS)])
async def test_the_header_declares_the_folds(workers: int, folds: int) -> None:
    head = await read_head(_chunks(workers), term=1)
    assert head.folds == folds


async def test_a_header_declaring_too_many_folds_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=f"stats.workers must be 0..{MAX_FOLDS}"):
        await read_head(_chunks(MAX_FOLDS + 1), term=1)


def _task(samples: int) -> tuple[Task, Node]:
    task = Task("t1", "sub0", 1, Range(0, 0, samples), np.arange(samples), 0.0, base_version=3)
    return task, Node("sub0", Role.WORKER, 1, 0.0, 0.0)


@pytest.mark.parametrize(
    ("folds", "match"), [(0, "1..256 updates"), (MAX_FOLDS + 1, "1..256"), (9, "cannot fold 9")]
)
def test_an_update_folding_more_than_its_task_can_hold_is_refused(folds: int, match: str) -> None:
    task, node = _task(8)
    with pytest.raises(UpdateRejectedError, match=match):
        check_update(task, node, model(1.0), base_version=3, num_samples=8, seconds=1.0,
                     folds=folds)  # fmt: skip
    check_update(task, node, model(1.0), base_version=3, num_samples=8, seconds=1.0, folds=8)


def test_the_roots_rule_counts_a_group_update_for_its_folds() -> None:
    agg = Aggregator(model(0.0), async_rule="fedasync-folds", mode="async", max_staleness=8)
    first = agg.add("t1", model(1.0), 16, 0)  # a device's own: FedAsync, x = 0.6
    assert first is not None
    np.testing.assert_allclose(first.params["W0"], 0.6, rtol=1e-6)
    new = agg.add("t2", model(2.0), 64, 0, folds=16)  # staleness 1, its base 0, gain 4
    assert new is not None and new.version == 2
    a = 0.6 / math.sqrt(2)
    np.testing.assert_allclose(new.params["W0"], 0.6 + a * 1.4 + a * 3 * 2.0, rtol=1e-6)


def test_a_refused_group_update_changes_nothing() -> None:
    agg = Aggregator(model(0.0), async_rule="fedasync-folds", mode="async", max_staleness=8)
    before = {k: v.copy() for k, v in agg.params.items()}
    with pytest.raises(UpdateRejectedError, match="folds"):
        agg.add("t1", model(1.0), 4, 0, folds=5)  # more folds than samples
    assert agg.version == 0
    for name, value in before.items():
        np.testing.assert_array_equal(agg.params[name], value)


def test_fedasync_ignores_folds() -> None:
    plain = Aggregator(model(0.0), async_rule="fedasync", mode="async")
    new = plain.add("t1", model(1.0), 64, 0, folds=16)
    assert new is not None
    np.testing.assert_allclose(new.params["W0"], 0.6, rtol=1e-6)


def test_a_relays_upward_update_stands_for_the_folds_of_its_round() -> None:
    sink = RelaySink(model(0.0), 5)
    sink.add("g1", model(1.0), 6, 5)
    sink.add("g2", model(2.0), 4, 5, folds=3)  # a member that is itself a group of three
    with pytest.raises(UpdateRejectedError, match=r"folds 1\.\.4"):
        sink.add("g3", model(2.0), 4, 5, folds=5)
    assert sink.round_size() == 2
    update = sink.answer(UpstreamTask("t1", 5, np.arange(10, dtype=np.int64)))
    assert update.updates == 4 and update.num_samples == 10
