"""A sub-leader reports its group's round upward as a device reports a task: the compute (its
slowest member's training) apart from the fixed cost, so the root's sizing does not take the
round's link time for slow training and shrink the group's tasks to the minimum."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import numpy as np
import pytest

from eddl.leader.relay import UpwardUpdate
from eddl.leader.uplink import Uplink
from eddl.proto.v1 import cluster_pb2


class _Stub:
    def __init__(self) -> None:
        self.headers: list[cluster_pb2.UpdateHeader] = []

    async def PushUpdate(
        self, chunks: AsyncIterator[cluster_pb2.UpdateChunk], **call: float
    ) -> cluster_pb2.PushUpdateReply:
        async for chunk in chunks:
            if chunk.WhichOneof("body") == "header":
                self.headers.append(chunk.header)
        return cluster_pb2.PushUpdateReply(outcome="accepted")


def _update() -> UpwardUpdate:
    return UpwardUpdate("t1", 3, 256, {"W0": np.zeros((2, 2), np.float32)}, updates=4)


async def _stats(**kwargs: Any) -> cluster_pb2.TaskStats:
    stub = _Stub()
    await Uplink(cast(Any, stub), "sub0").push("job-1", _update(), **kwargs)
    return stub.headers[0].stats


@pytest.mark.parametrize(
    ("kwargs", "seconds", "overhead"),
    [
        ({"seconds": 0.25, "wall": 2.0, "workers": 4}, 0.25, 1.75),  # compute and fixed cost
        ({"seconds": 0.0, "wall": 2.0}, 2.0, 0.0),  # members told no training time: the wall
        ({"seconds": 0.1}, 0.1, 0.0),  # no wall given: the seconds alone, as before
        ({"seconds": 3.0, "wall": 2.0}, 3.0, 0.0),  # clocks disagree: never a negative cost
    ],
)
async def test_the_round_is_reported_as_compute_plus_fixed_cost(
    kwargs: dict[str, Any], seconds: float, overhead: float
) -> None:
    stats = await _stats(**kwargs)
    assert stats.samples == 256
    assert stats.seconds == pytest.approx(seconds)
    assert stats.overhead_seconds == pytest.approx(overhead)
    assert stats.workers == kwargs.get("workers", 0)
