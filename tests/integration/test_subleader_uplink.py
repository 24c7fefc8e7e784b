"""A sub-leader's upward path against a real root over gRPC: a task drawn and cut into group
ranges, the group's round folded into one update and pushed up; wrong ones refused unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import numpy as np
import pytest

from eddl.leader.relay import RelaySink, UpwardUpdate
from eddl.leader.uplink import Uplink
from eddl.leader.upstream import UpstreamSource
from eddl.net import REASON_KEY
from tests.integration.cluster_support import (
    DIGITS_JOB,
    TOKEN,
    Cluster,
    cluster_stub,
    running_cluster,
    wait_until,
)

SLOW_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
SLOW_JOB.update(rounds=1000, max_epochs=10000.0, default_task_samples=96)


def _snapshot(cluster: Cluster, job_id: str) -> tuple[int, dict[str, bytes]]:
    params = cluster.coordinator.model(job_id).params
    return cluster.status(job_id)["version"], {k: v.tobytes() for k, v in params.items()}


async def _refused(uplink: Uplink, job_id: str, update: UpwardUpdate) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await uplink.push(job_id, update, seconds=0.1)
    reason = dict(info.value.trailing_metadata() or ()).get(REASON_KEY, "")
    return info.value.code().name, str(reason)


async def test_the_group_answers_its_upstream_task_once_and_bad_answers_change_nothing(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, admin_token="admin", heartbeat_interval_s=5.0) as cluster:
        job_id = await cluster.submit(SLOW_JOB, token="admin")
        async with cluster_stub(cluster.address) as stub:
            uplink = Uplink(stub, "sub-1")
            await uplink.join(TOKEN)
            drawn = None
            for _ in range(20):  # bounded: the job may need a moment to start
                drawn = await uplink.next_task(0.5)
                if drawn is not None:
                    break
            assert drawn is not None
            job, upstream = drawn
            assert job.job_id == job_id and job.dataset == "digits"
            version, base = await uplink.pull(job_id, upstream.base_version)
            assert version == upstream.base_version

            # The group: ranges of the upstream task for two workers, one round.
            source = UpstreamSource(1797, max_task_samples=4096)
            serial = source.accept(upstream)
            sink = RelaySink(base, version)
            complete = None
            for k, worker in enumerate(("g1", "g2", "g1", "g2") * upstream.num_samples):
                rng = source.take(worker, max(1, upstream.num_samples // 3))
                if rng is None:
                    break
                trained = {n: v + np.float32(0.01 * (k + 1)) for n, v in base.items()}
                sink.add(f"{worker}-{k}", trained, len(rng), version)
                complete = source.record_done(rng)
            assert complete is not None and complete.task_id == upstream.task_id
            update = sink.answer(complete)
            assert update.num_samples == upstream.num_samples and update.updates >= 3

            before = _snapshot(cluster, job_id)
            wrong_base = dataclasses.replace(update, base_version=update.base_version + 1)
            assert (await _refused(uplink, job_id, wrong_base))[0] == "INVALID_ARGUMENT"
            wrong_samples = dataclasses.replace(update, num_samples=update.num_samples - 1)
            assert (await _refused(uplink, job_id, wrong_samples))[0] == "INVALID_ARGUMENT"
            uplink.term -= 1
            assert await _refused(uplink, job_id, update) == ("FAILED_PRECONDITION", "stale-term")
            uplink.term += 1
            assert _snapshot(cluster, job_id) == before  # nothing changed

            reply = await uplink.push(job_id, update, seconds=0.2)
            assert reply.outcome in ("aggregated", "round")
            after = _snapshot(cluster, job_id)
            assert after[0] == before[0] + 1 and after[1] != before[1]
            again = await uplink.push(job_id, update, seconds=0.2)  # the same answer twice
            assert again.outcome == "duplicate"
            assert _snapshot(cluster, job_id) == after  # aggregated once only
            source.release(serial)
            assert source.held() == []


async def test_a_sub_leader_that_dies_loses_its_range_to_the_others_and_its_late_answer(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, admin_token="admin", heartbeat_interval_s=0.3) as cluster:
        job_id = await cluster.submit(SLOW_JOB, token="admin")
        async with cluster_stub(cluster.address) as stub:
            dead, alive = Uplink(stub, "sub-1"), Uplink(stub, "sub-2")
            await dead.join(TOKEN)
            drawn = None
            for _ in range(20):  # bounded: the job may need a moment to start
                drawn = await dead.next_task(0.5)
                if drawn is not None:
                    break
            assert drawn is not None
            _, lost = drawn
            _, base = await dead.pull(job_id, lost.base_version)
            before = _snapshot(cluster, job_id)
            await alive.join(TOKEN)

            # sub-1 now goes silent: no beat, no answer; it expires after two missed beats.
            async def sub_1_gone() -> bool:
                await alive.heartbeat()
                return "sub-1" not in cluster.coordinator.membership

            await wait_until(sub_1_gone, 20.0, "sub-1 to expire", step=0.1)
            retaken = None
            for _ in range(20):  # bounded; its range is re-queued at the front
                await alive.heartbeat()
                got = await alive.next_task(0.3)
                if got is not None:
                    retaken = got[1]
                    break
            assert retaken is not None
            n = min(retaken.num_samples, lost.num_samples)
            assert n > 0 and retaken.indexes[:n].tolist() == lost.indexes[:n].tolist()

            # The dead sub-leader's late answer is refused: nothing is aggregated twice.
            sink = RelaySink(base, lost.base_version)
            sink.add("g1", base, lost.num_samples, lost.base_version)
            code, _ = await _refused(dead, job_id, sink.answer(lost))
            assert code in ("NOT_FOUND", "FAILED_PRECONDITION")
            assert _snapshot(cluster, job_id) == before
