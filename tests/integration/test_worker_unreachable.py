"""A worker pointed at a closed port says where it is trying, and joins once a leader is there.

Real gRPC: the worker daemon dials a port nothing listens on, then a leader starts on it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import WorkerDaemon
from tests.ports import free_port

from .cluster_support import TOKEN, running_cluster, wait_until

pytestmark = pytest.mark.usefixtures("every_log_level")


def _worker(node_id: str, *leaders: str) -> WorkerDaemon:
    """A plaintext worker that retries fast and serves nothing of its own."""
    return WorkerDaemon(
        WorkerConfig(
            leaders=list(leaders),
            node_id=node_id,
            join_token=TOKEN,
            security="off",
            poll_ms=200,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            bind="",
        )
    )


async def _stopped(worker: WorkerDaemon, task: asyncio.Task[None]) -> None:
    """Stop ``worker`` (its ``run`` is ``task``) within 10 s, cancelling it if it hangs; once
    stopped, calling it again does nothing."""
    try:
        worker.request_stop()
        await asyncio.wait_for(task, 10)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_worker_reports_the_address_it_cannot_reach_then_joins(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    worker = _worker("w-late", address)
    with capture_logs() as logs:
        task = asyncio.create_task(worker.run())
        try:
            await wait_until(lambda: worker.unreachable.failures >= 3, 20, "failed joins")
            assert not worker.joined
            first = [e for e in logs if e["event"] == "leader unreachable"]
            assert len(first) == 1 and first[0]["leader"] == address
            assert first[0]["reason"].startswith("UNAVAILABLE")
            retries = [e for e in logs if e["event"] == "leader unreachable, backing off"]
            assert retries and all(e["reason"].startswith("UNAVAILABLE") for e in retries)
            async with running_cluster(tmp_path, bind=address) as cluster:
                # The worker's side of the join: the leader knows the node a moment earlier.
                await wait_until(lambda: worker.joined, 20, "join")
                assert "w-late" in cluster.coordinator.membership
                again = [e for e in logs if e["event"] == "leader reachable again"]
                assert len(again) == 1 and again[0]["leader"] == address
                assert again[0]["failed_calls"] >= 3 and worker.unreachable.failing_s == 0.0
                await _stopped(worker, task)  # while its leader still answers the leave
        finally:
            await _stopped(worker, task)


class _Cancelling(grpc.GenericRpcHandler):
    """A server that ends every call with CANCELLED, as an overloaded or stopping leader can."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        async def cancel(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.CANCELLED, "call dropped")
            raise AssertionError("abort returned")

        return grpc.unary_unary_rpc_method_handler(cancel)


async def test_a_worker_whose_join_is_cancelled_tries_the_next_leader(tmp_path: Path) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Cancelling(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with running_cluster(tmp_path) as cluster:
            worker = _worker("w-next", f"127.0.0.1:{port}", cluster.address)
            with capture_logs() as logs:
                task = asyncio.create_task(worker.run())
                try:
                    await wait_until(lambda: worker.joined, 20, "join at the second leader")
                    assert "w-next" in cluster.coordinator.membership
                    assert not task.done()  # the daemon kept running through the CANCELLED
                    down = [e for e in logs if e["event"] == "leader unreachable"]
                    assert down and down[0]["reason"].startswith("CANCELLED")
                finally:
                    await _stopped(worker, task)
    finally:
        await server.stop(None)
