"""``LeaderDaemon``: the leader's coordinator behind a gRPC server, with its timers.

Start-up: open the checkpoint store in the state directory, claim a new leader *term* (one more
than the last one recorded in ``state_dir/term``, so every message of a previous incarnation is
recognisably stale), resume the unfinished job from its last checkpoint, then serve Cluster and
Admin (plus health and reflection) and write the bound port to ``port_file``. While serving, a
tick every ``TICK_S`` expires silent nodes (their tasks go back to the queue at once), closes
overdue rounds and lets the auto policy decide; long-polls are woken when that changed anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from eddl.jobcheck import JobLimits
from eddl.leader.config import LeaderConfig
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import LeaderError, StoreError
from eddl.leader.membership import Membership, Role
from eddl.leader.runtime import build_runtime
from eddl.leader.servicers import AdminServicer, ClusterServicer, Notifier
from eddl.leader.store import SqliteStore
from eddl.log import get_logger
from eddl.net import RunningServer, start_server, write_port_file
from eddl.profiler.probe import PROBE_SERVICE_NAME, ProbeServicer
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, probe_pb2_grpc

__all__ = ["TICK_S", "LeaderDaemon", "claim_term"]

log = get_logger("leader")
TICK_S = 0.1
SERVICE_NAMES = (
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    PROBE_SERVICE_NAME,
)


def claim_term(state_dir: Path) -> int:
    """Read the last term from ``state_dir/term``, store and return the next one."""
    path = state_dir / "term"
    last = 0
    if path.exists():
        text = path.read_text().strip()
        if not text.isdigit():
            raise StoreError(f"{path} holds {text!r}, not a term number")
        last = int(text)
    term = last + 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{term}\n")
    tmp.replace(path)
    return term


class LeaderDaemon:
    def __init__(
        self, config: LeaderConfig, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    ) -> None:
        self.config = config
        self.interceptors = interceptors  # e.g. eddl.ops' metrics interceptor
        self.on_serving: list[Callable[[RunningServer], None]] = []  # called once serving
        self.coordinator: Coordinator | None = None
        self.cluster: ClusterServicer | None = None
        self.server: RunningServer | None = None
        self._store: SqliteStore | None = None
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> RunningServer:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        term = claim_term(cfg.state_dir)
        self._store = SqliteStore(cfg.state_dir)
        membership = Membership(
            heartbeat_interval=cfg.heartbeat_interval_s,
            patience=cfg.patience,
            jitter=cfg.heartbeat_jitter,
            join_tokens={cfg.join_token: Role.WORKER},
            now=time.monotonic,
        )
        limits = JobLimits(max_model_bytes=cfg.max_model_mib * 1024 * 1024)
        coordinator = Coordinator(
            self._store,
            membership=membership,
            term=term,
            now=time.monotonic,
            runtime_factory=functools.partial(build_runtime, limits=limits),
        )
        # Rebuilding a job loads its data and model: keep the loop free meanwhile.
        resumed = await asyncio.to_thread(coordinator.resume)
        notifier = Notifier()
        cluster = ClusterServicer(coordinator, cfg, notifier)
        admin = AdminServicer(coordinator, cfg, cluster)
        server = await start_server(
            cfg.bind,
            [
                (cluster_pb2_grpc.add_ClusterServicer_to_server, cluster),
                (admin_pb2_grpc.add_AdminServicer_to_server, admin),
                # Workers and peers measure their bandwidth and RTT to this leader.
                (probe_pb2_grpc.add_ProbeServicer_to_server, ProbeServicer()),
            ],
            SERVICE_NAMES,
            interceptors=self.interceptors,
        )
        if not cluster.leaders:
            cluster.leaders = [server.address]
        self.coordinator, self.cluster, self.server = coordinator, cluster, server
        if cfg.port_file is not None:
            write_port_file(cfg.port_file, server.port)
        log.info(
            "leader serving",
            address=server.address,
            term=term,
            resumed=resumed,
            state_dir=str(cfg.state_dir),
        )
        for hook in self.on_serving:
            hook(server)
        return server

    def _fingerprint(self) -> tuple[Any, ...]:
        assert self.coordinator is not None
        coord = self.coordinator
        alive = tuple(sorted(n.node_id for n in coord.membership.alive()))
        try:
            status = coord.job_status()
        except LeaderError:
            return (alive,)
        return (
            alive,
            status.get("job_id"),
            status.get("status"),
            status.get("version"),
            status.get("tasks_in_flight"),
            status.get("mode"),
        )

    async def _tick_loop(self) -> None:
        assert self.coordinator is not None and self.cluster is not None
        before = self._fingerprint()
        while True:
            await asyncio.sleep(TICK_S)
            self.coordinator.tick()
            after = self._fingerprint()
            if after != before:
                self.cluster.notifier.notify()
            before = after

    async def run(self) -> None:
        """Serve until :meth:`request_stop`, then stop gracefully and close the store."""
        try:
            server = await self.start()
            ticker = asyncio.create_task(self._tick_loop())
            try:
                await self._stop.wait()
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                await server.stop(self.config.grace_s)
        finally:
            if self._store is not None:
                self._store.close()
            log.info("leader stopped")
