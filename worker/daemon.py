"""The worker daemon: join, beat, pull the model, train tasks, push updates, leave.

Two loops run in one ``asyncio.TaskGroup``: heartbeats (:mod:`~eddl.worker.heartbeat`) and
tasks (:mod:`~eddl.worker.tasks`: long-poll ``GetTask``, fetch the model version the task
starts from, train with the executor, push the update in chunks through
:class:`~eddl.worker.transfer.Transfers`). Both loops share one
:class:`~eddl.worker.session.LeaderSession`: when the leader is away (``UNAVAILABLE``) or has
forgotten the node (unknown node, new term), the next call joins again, moving down the leader
list with backoff. :meth:`WorkerDaemon.request_stop` (SIGTERM/SIGINT) stops both loops and
sends ``Leave`` so the leader requeues the node's task at once.

The daemon is the wire edge: what the node is (:class:`~eddl.worker.presence.Presence`) and
how it trains (:class:`~eddl.worker.executor.Executor`) are given to it, and a task reaches the
executor as a typed :class:`~eddl.worker.executor.TaskSpec`, not as protobuf.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from eddl.data import load_dataset
from eddl.log import get_logger
from eddl.net import RunningServer, start_server, write_port_file
from eddl.profiler import LinkTracker
from eddl.profiler.probe import PROBE_SERVICE_NAME, ProbeServicer
from eddl.proto.v1 import cluster_pb2, common_pb2, probe_pb2_grpc
from eddl.security.enrol import Renewer
from eddl.security.node import NodeSecurity, bootstrap_address, prepare
from eddl.security.tls import Identity
from eddl.worker.config import WorkerConfig
from eddl.worker.data import SampleSource
from eddl.worker.executor import Executor
from eddl.worker.heartbeat import Heartbeats
from eddl.worker.link import Backoff, LeaderLink
from eddl.worker.presence import HostPresence, Presence
from eddl.worker.session import JoinRefusedError, LeaderSession
from eddl.worker.tasks import TaskLoop, TaskTiming, task_from_proto
from eddl.worker.training import NumpyExecutor
from eddl.worker.transfer import Transfers
from eddl.worker.unreachable import UnreachableReporter

__all__ = ["JoinRefusedError", "TaskTiming", "WorkerDaemon", "start_endpoint", "task_from_proto"]

log = get_logger("worker")

# How long a stopping worker waits for the answer to an update it is pushing.
STOP_PUSH_GRACE_S = 5.0


async def node_security(config: WorkerConfig, node_id: str) -> NodeSecurity:
    """The node's credentials as ``config`` says: its saved certificate, or a new enrolment."""
    host = config.bind.rpartition(":")[0].strip("[]") if config.bind else ""
    token = config.enrol_token
    directory = Path(config.pki_dir)
    needs_token = config.security == "mtls" and (
        not Identity.exists(directory) or Identity.load(directory).expired()
    )
    if not token and config.enrol_token_file and needs_token:
        # Read only when enrolling: a node that has its certificate needs no token file.
        text = await asyncio.to_thread(Path(config.enrol_token_file).read_text)
        token = text[:256].strip()
    return await prepare(
        config.security,
        Path(config.pki_dir),
        node_id=node_id,
        token=token,
        bootstrap=config.bootstrap or bootstrap_address(config.leaders[0]),
        # Names a caller on this host dials the endpoint by (health checks, probes).
        hosts=tuple(
            dict.fromkeys(
                ["localhost", "127.0.0.1", *([host] if host not in ("", "0.0.0.0", "::") else [])]
            )
        ),
    )


async def start_endpoint(
    config: WorkerConfig, security: NodeSecurity | None = None
) -> RunningServer:
    """The node's own gRPC endpoint on ``config.bind``: health (NOT_SERVING until joined),
    reflection and the Probe service; its port goes to ``config.port_file`` when set."""
    security = security or NodeSecurity("off")
    endpoint = await start_server(
        config.bind,
        [(probe_pb2_grpc.add_ProbeServicer_to_server, ProbeServicer())],
        [PROBE_SERVICE_NAME],
        credentials=security.server_credentials(),
        interceptors=security.server_interceptors(),
    )
    await endpoint.set_serving(False)
    if config.port_file:
        write_port_file(Path(config.port_file), endpoint.port)
    return endpoint


class WorkerDaemon:
    """One cluster node: by default a Python worker that trains with ``eddl.learn``.

    ``executor`` runs the tasks (default :class:`~eddl.worker.training.NumpyExecutor` with the
    config's throttle) and ``presence`` says what the node is (default
    :class:`~eddl.worker.presence.HostPresence`); a gateway gives each device's daemon its
    own (:class:`eddl.worker.gateway.McuAgent`). The membership, task, transfer and
    reconnection logic is the same for every kind of node.
    """

    def __init__(
        self,
        config: WorkerConfig,
        executor: Executor | None = None,
        *,
        rng: random.Random | None = None,
        node_id: str | None = None,
        serve: bool = True,
        presence: Presence | None = None,
        security: NodeSecurity | None = None,
    ) -> None:
        self.config = config
        # Given (a gateway's, shared by its devices) or prepared by :meth:`run` from config.
        self._own_security = security is None
        self.executor = executor or NumpyExecutor(config.throttle)
        self.presence = presence or HostPresence()
        self.node_id = node_id or config.node_id
        self._serve = serve and bool(config.bind)
        self.leave_reason = "shutdown"
        self._rng = rng or random.Random()
        self.link = LeaderLink(
            config.leaders,
            Backoff(config.backoff_initial_s, config.backoff_max_s, self._rng),
            security,
        )
        self.session = LeaderSession(config, self.node_id, self.link, self.join_request)
        # Model pulls, update pushes and sample fetches, timed (the link estimates).
        self.transfers = Transfers(self.session)
        self.samples = SampleSource(config.datasets, self.transfers.fetch_samples)
        self.tasks = TaskLoop(
            self.session,
            self.transfers,
            self.samples,
            self.executor,
            on_task=self._task_pushed,
            stopping=lambda: self.stopping,
        )
        self.heartbeats = Heartbeats(
            self.session,
            self.beat_request,
            rng=self._rng,
            cancel_task=self.tasks.cancel_current,
            lead_token=self._lead_token,
        )
        self.endpoint: RunningServer | None = None
        self._stop = asyncio.Event()
        self.on_serving: list[Callable[[], None]] = []  # called once the daemon runs
        self.on_task: list[Callable[[TaskTiming], None]] = []  # called per task pushed
        # Called with the token a heartbeat reply carries when the root promoted this
        # --can-lead worker's group over mTLS (eddl.worker.leading).
        self.on_lead_token: list[Callable[[str], None]] = []

    @property
    def role(self) -> str:
        return self.presence.role

    # -- what the node's collaborators hold, read by its presence, metrics and tests -----------

    @property
    def unreachable(self) -> UnreachableReporter:
        """Where the worker is trying and for how long while no leader answers."""
        return self.session.unreachable

    @property
    def term(self) -> int:
        return self.session.term

    @property
    def links(self) -> LinkTracker:
        """Passive link estimates from the model pulls and update pushes this worker makes."""
        return self.transfers.links

    @property
    def state(self) -> str:
        return self.tasks.state

    @property
    def tasks_done(self) -> int:
        return self.tasks.tasks_done

    @property
    def tasks_failed(self) -> int:
        """Tasks reported to the leader as failed."""
        return self.tasks.tasks_failed

    @property
    def samples_done(self) -> int:
        return self.tasks.samples_done

    @property
    def samples_per_second(self) -> float:
        return self.tasks.samples_per_second

    def envelope(self, job_id: str = "", version: int = 0) -> common_pb2.Envelope:
        return self.session.envelope(job_id, version)

    async def join_request(self) -> cluster_pb2.JoinRequest:
        """What this node says about itself when it joins (again)."""
        return await self.presence.join_request(self)

    async def beat_request(self) -> cluster_pb2.HeartbeatRequest:
        """One heartbeat of this node."""
        return await self.presence.beat_request(self)

    def _task_pushed(self, timing: TaskTiming) -> None:
        for hook in self.on_task:
            hook(timing)

    def _lead_token(self, token: str) -> None:
        for hook in self.on_lead_token:
            hook(token)

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def joined(self) -> bool:
        """Whether the node is joined to a leader right now."""
        return self.session.joined.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Work until :meth:`request_stop`; then leave the cluster and close the channel."""
        log.info(
            "worker starting",
            node=self.node_id,
            leaders=self.link.leaders,
            throttle=self.config.throttle,
        )
        if self._own_security:
            self.link.security = await node_security(self.config, self.node_id)
        security = self.link.security
        if self._serve:
            self.endpoint = await start_endpoint(self.config, security)
        for hook in self.on_serving:
            hook()
        try:
            async with asyncio.TaskGroup() as tg:
                renewer = None
                if self._own_security and security.identity is not None:
                    renewer = tg.create_task(self.renewer(security).run())
                tg.create_task(self._prefetch())
                beats = tg.create_task(self.heartbeats.run())
                work = tg.create_task(self.tasks.run())
                health = tg.create_task(self._health_loop()) if self.endpoint else None
                await self._stop.wait()
                beats.cancel()
                await self.tasks.finish_push(STOP_PUSH_GRACE_S)
                work.cancel()
                for task in (health, renewer):
                    if task is not None:
                        task.cancel()
        finally:
            try:
                if self.joined:
                    await self.session.leave(self.leave_reason)
            finally:
                await self.link.close()
                if self.endpoint is not None:
                    await self.endpoint.stop(grace=1.0)
        log.info("worker stopped", node=self.node_id, tasks_done=self.tasks_done)

    def renewer(self, security: NodeSecurity) -> Renewer:
        """Renews the node's certificate at the current leader, else at the next it knows (a
        sub-leader renews nobody: its members renew at the root); new calls use the new one."""
        assert security.identity is not None

        async def renewed(identity: Identity) -> None:
            security.renewed(identity)
            await self.link.close_retired()

        return Renewer(
            Path(self.config.pki_dir),
            security.identity,
            lambda: [self.link.address, *self.link.leaders],
            renewed,
        )

    async def _health_loop(self) -> None:
        """Mirror membership in the endpoint's health: SERVING while joined to a leader."""
        assert self.endpoint is not None
        changed = self.session.changed
        serving: bool | None = None
        while True:
            changed.clear()
            joined = self.joined
            if joined != serving:
                await self.endpoint.set_serving(joined)
                serving = joined
            await changed.wait()

    async def _prefetch(self) -> None:
        """Load the local datasets now, so the first task does not wait for the disk."""
        for name in self.config.datasets:
            try:
                await asyncio.to_thread(load_dataset, name)
            except (ValueError, OSError) as exc:
                log.warning("cannot prefetch dataset", dataset=name, error=str(exc))
