"""``EtcdLeadership``'s lease keep-alive ends when cancelled, even when the cancel lands in the
same step as a renewal's answer (on Python 3.11, ``asyncio.wait_for`` returned the answer and
dropped the cancel there, so a stopping candidate never finished stopping)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from eddl.leader.election import ElectionConfig, EtcdLeadership
from eddl.leader.etcd import EtcdClient


class _CancellingClient:
    """Answers each renewal at once; the ``cancel_on``-th also cancels the renewing task."""

    def __init__(self, cancel_on: int) -> None:
        self.cancel_on = cancel_on
        self.renewals = 0
        self.task: asyncio.Task[Any] | None = None

    async def keepalive(self, lease_id: int) -> int:
        self.renewals += 1
        if self.renewals == self.cancel_on and self.task is not None:
            self.task.cancel()
        return 3


async def test_a_cancel_landing_with_a_renewal_ends_the_keep_alive() -> None:
    client = _CancellingClient(cancel_on=2)
    leadership = EtcdLeadership(
        cast(EtcdClient, client), ElectionConfig("a", "127.0.0.1:1", ttl_s=2, margin_s=0.5)
    )
    leadership._renewed_at = time.monotonic()
    task = asyncio.create_task(leadership._keep_alive(7))
    client.task = task
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await asyncio.shield(task)
    assert task.cancelled()
    assert client.renewals == 2  # no renewal after the cancel
