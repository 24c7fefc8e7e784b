"""``LeaderDaemon``: the leader's coordinator behind a gRPC server, with its timers.

Start-up: lock the state directory (one leader per directory), open the checkpoint store in
it, claim a new leader *term* through the static leadership (one more than the store's
leadership record, so every message of a previous incarnation is recognisably stale), resume
the unfinished job from its last checkpoint, then serve Cluster and Admin (plus health and
reflection) and write the bound port to ``port_file``. While serving, a tick every ``TICK_S``
expires silent nodes (their tasks go back to the queue at once), closes overdue rounds and lets
the auto policy decide. All of it runs through the :class:`~eddl.leader.actor.LeaderCore`, the
one owner of the leader's state; its domain events wake the long-polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from eddl.jobcheck import JobLimits
from eddl.leader.actor import LeaderCore, StoreWriter
from eddl.leader.checkpoint import CheckpointStore, LeadershipRecord
from eddl.leader.config import LeaderConfig
from eddl.leader.coordinator import Coordinator
from eddl.leader.ha import HaConfig, HaNode
from eddl.leader.leadership import StaticLeadership
from eddl.leader.membership import Membership, Role
from eddl.leader.ports import Leadership
from eddl.leader.runtime import RuntimeFactory, build_runtime
from eddl.leader.security import LeaderSecurity
from eddl.leader.service import LeaderService
from eddl.leader.servicers import AdminServicer, ClusterServicer
from eddl.leader.servicers.root_only import RootOnly
from eddl.leader.statedir import StateDirLock
from eddl.leader.store import SqliteStore
from eddl.log import get_logger
from eddl.net import RunningServer, start_server, write_port_file
from eddl.profiler.probe import PROBE_SERVICE_NAME, ProbeServicer
from eddl.proto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    probe_pb2_grpc,
)
from eddl.security.bootstrap import SECURITY_SERVICE_NAME

__all__ = ["TICK_S", "LeaderDaemon"]

log = get_logger("leader")
TICK_S = 0.1
SERVICE_NAMES = (
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    PROBE_SERVICE_NAME,
)
PEER_SERVICE_NAME = peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name


class LeaderDaemon:
    def __init__(
        self,
        config: LeaderConfig,
        *,
        lock: StateDirLock | None = None,
        runtime_factory: RuntimeFactory | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        authorized_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        on_command: Callable[[str, float], None] | None = None,
        leads: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        # Whether a node leads a group of this root (eddl.leader.groupedge): its update may
        # stand for the updates its group folded.
        self._leads = leads
        self._on_command = on_command  # each owner command's CPU seconds (the metrics)
        self._runtime_factory = runtime_factory
        self.interceptors = interceptors  # e.g. eddl.ops' metrics interceptor
        # Interceptors that see only authorized calls (e.g. eddl.leader.groupedge)
        self.authorized_interceptors = authorized_interceptors
        self.on_serving: list[Callable[[RunningServer], None]] = []  # called once serving
        # Taken before anything else touches the state directory (``eddl-leader`` takes it
        # even before importing this module, so a second leader exits at once).
        self.lock = lock if lock is not None else StateDirLock(config.state_dir)
        self.leadership: Leadership | None = None
        self.ha: HaNode | None = None
        self.coordinator: Coordinator | None = None
        self.cluster: ClusterServicer | None = None
        self.server: RunningServer | None = None
        self.security: LeaderSecurity | None = None
        self._store: SqliteStore | None = None
        self._stop = asyncio.Event()
        self.stepped_down = False
        self._ticker: asyncio.Task[None] | None = None
        self.core: LeaderCore | None = None
        self._writer: StoreWriter | None = None
        self.service: LeaderService | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> RunningServer:
        cfg = self.config
        self.lock.acquire()
        self._store = SqliteStore(cfg.state_dir)
        self.security = security = LeaderSecurity.build(cfg)
        store: CheckpointStore = self._store
        static: StaticLeadership | None = None
        leadership: Leadership
        if cfg.coordinator:
            # A candidate: elected through etcd, replicated, root only once it resumed.
            self.ha = ha = HaNode(
                HaConfig(
                    cfg.coordinator,
                    cfg.leader_id,
                    cfg.advertise,
                    cfg.join_token,
                    channel_credentials=security.peer_credentials,
                    lease_ttl_s=cfg.lease_ttl_s,
                    margin_s=max(0.5, cfg.lease_ttl_s / 3),
                    min_replicas=cfg.min_replicas,
                ),
                self._store,
                security.authority,
            )
            leadership = ha.leadership
            store = ha.replicating_store()
        else:
            # A leader configured to follow another one stands by: it claims no term, resumes
            # nothing, and points every caller to the root (RootOnly below).
            leadership = static = StaticLeadership(
                self._store, leader_id=cfg.leader_id, root=not cfg.follow, root_hint=cfg.follow
            )
        self.leadership = leadership
        membership = Membership(
            heartbeat_interval=cfg.heartbeat_interval_s,
            patience=cfg.patience,
            jitter=cfg.heartbeat_jitter,
            join_tokens={security.join_token: Role.WORKER},
            now=time.monotonic,
        )
        limits = JobLimits(max_model_bytes=cfg.max_model_mib * 1024 * 1024)
        self._writer = StoreWriter(store)
        coordinator = Coordinator(
            store,
            membership=membership,
            leadership=leadership,
            now=time.monotonic,
            runtime_factory=self._runtime_factory
            or functools.partial(build_runtime, limits=limits),
            commit=self._writer.submit,
            link_capacity_bps=cfg.link_capacity_mbps * 1e6 or None,
        )
        # Rebuilding a job loads its data and model: keep the loop free meanwhile. Nothing is
        # served yet, so no command can interleave.
        resumed = await asyncio.to_thread(coordinator.resume) if static and static.is_root() else []
        written = coordinator.take_commit()
        if written is not None:
            await asyncio.wrap_future(written)
        # Without standbys, a round's next tasks leave before its version's commit; with them,
        # nothing a failover could lose is handed out (see eddl.leader.actor).
        self.core = LeaderCore(coordinator, self._on_command, replies_before_commit=self.ha is None)
        # Typed domain events, not a periodic comparison of statuses, wake the long-polls.
        self.service = service = LeaderService(self.core)
        if self._leads is not None:
            service.leads = self._leads
        cluster = ClusterServicer(service, cfg)
        admin = AdminServicer(service, cfg)
        registrations: list[Any] = [
            (cluster_pb2_grpc.add_ClusterServicer_to_server, cluster),
            (admin_pb2_grpc.add_AdminServicer_to_server, admin),
            # Workers and peers measure their bandwidth and RTT to this leader.
            (probe_pb2_grpc.add_ProbeServicer_to_server, ProbeServicer()),
            *security.registrations,  # mtls: Security (Renew) on the main port
        ]
        names: tuple[str, ...] = SERVICE_NAMES
        if self.ha is not None:
            registrations.append((peer_pb2_grpc.add_PeerServicer_to_server, self.ha.peer))
            names = (*SERVICE_NAMES, PEER_SERVICE_NAME)
            service.ha_status = self.ha.status
            # Workers learn every candidate, so they can move on when the root dies.
            self.ha.on_addresses = lambda addresses: setattr(cluster, "leaders", addresses)
        server = await start_server(
            cfg.bind,
            registrations,
            names,
            # The metrics edge sees every call, refusals included; then authentication and
            # authorization, before anything of the leader sees a stranger's call.
            interceptors=[
                *self.interceptors,
                *security.interceptors,
                # A candidate that is not root neither enrols nor renews: the root's CA ledger
                # is the one the standbys receive.
                RootOnly(leadership, (*SERVICE_NAMES[:2], SECURITY_SERVICE_NAME)),
                *self.authorized_interceptors,
            ],
            credentials=security.credentials,
        )
        await security.start_bootstrap([RootOnly(leadership, (SECURITY_SERVICE_NAME,))])
        if static is not None:
            static.serving_at(server.address)
        if not cluster.leaders:
            cluster.leaders = [cfg.advertise or server.address]
        self.coordinator, self.cluster, self.server = coordinator, cluster, server
        self._ticker = asyncio.create_task(self._tick_loop())
        if self.ha is not None:
            await self.ha.start(self._promote)
        if cfg.port_file is not None:
            write_port_file(cfg.port_file, server.port)
        log.info(
            "leader serving",
            address=server.address,
            term=leadership.term,
            resumed=resumed,
            state_dir=str(cfg.state_dir),
        )
        for hook in self.on_serving:
            hook(server)
        return server

    async def _promote(self, term: int) -> None:
        """This candidate won ``term``: record it, then resume the replicated job."""
        assert self.core is not None and self._store is not None and self.server is not None
        store, core = self._store, self.core
        address = self.config.advertise or self.server.address
        record = LeadershipRecord(term, self.config.leader_id, address, time.time())
        await asyncio.to_thread(store.save_leadership, record)
        resumed = await core.call(core.coordinator.resume)
        log.info("root resumed", term=term, resumed=resumed)
        if self.ha is not None and self.ha.events:
            why = self.ha.events[-1]
            await core.call(
                core.coordinator.note_election,
                f"{self.config.leader_id} is root in term {term} ({why.kind.value}): {why.reason}",
                term=term,
                root=address,
                election=why.kind.value,
            )

    async def _tick_loop(self) -> None:
        assert self.core is not None and self.leadership is not None
        core, leadership = self.core, self.leadership
        while True:
            await asyncio.sleep(TICK_S)
            if leadership.is_root():  # a standby's coordinator holds nothing to tick
                await core.call(core.coordinator.tick)

    async def run(self) -> None:
        """Serve until :meth:`request_stop` (or, elected, until this root steps down), then
        stop gracefully and close the store."""
        try:
            await self.start()
            if self.ha is None:
                await self._stop.wait()
                return
            stop = asyncio.create_task(self._stop.wait())
            down = asyncio.create_task(self.ha.stepped_down.wait())
            await asyncio.wait({stop, down}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            down.cancel()
            if self.ha.stepped_down.is_set():
                self.stepped_down = True
                log.warning("stepped down: stopping; a restart rejoins as a standby")
        finally:
            await self.stop(self.config.grace_s)

    async def stop(self, grace: float | None = None) -> None:
        """Stop the timers and the server, close the store, give up the state directory."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if self.server is not None:
            await self.server.stop(self.config.grace_s if grace is None else grace)
        if self.ha is not None:
            await self.ha.close()
            self.ha = None
        if self.security is not None:
            await self.security.stop(0)
        if self.service is not None:
            self.service.close()
            self.service = None
        if self.core is not None:
            await asyncio.to_thread(self.core.close)
            self.core = None
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self.lock.held:
            self.lock.release()
            log.info("leader stopped")
