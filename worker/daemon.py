"""The worker daemon: join, beat, pull the model, train tasks, push updates, leave.

Two loops run in one ``asyncio.TaskGroup``: heartbeats (interval from the leader, with jitter)
and tasks (long-poll ``GetTask``, fetch the model version the task starts from, train with
the executor, push the update in chunks). The next ``GetTask`` leaves with the push, naming
the task being pushed (``after_task_id``): the leader answers it once the update is taken, so
a worker's next task reaches it without a round trip after the push's reply. Both loops share
one :class:`LeaderLink`. When the leader is away (``UNAVAILABLE``) or has forgotten the node
(unknown node, new term), the next call joins again, moving down the leader list with backoff.
:meth:`WorkerDaemon.request_stop` (SIGTERM/SIGINT) stops both loops and sends ``Leave`` so the
leader requeues the node's task at once.

The daemon is the wire edge: what the node is (:class:`~eddl.worker.presence.Presence`) and
how it trains (:class:`~eddl.worker.executor.Executor`) are given to it, and a task reaches the
executor as a typed :class:`~eddl.worker.executor.TaskSpec`, not as protobuf.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import grpc
import numpy as np

from eddl.data import load_dataset
from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.net import (
    REASON_KEY,
    ChunkError,
    RunningServer,
    array_from_tensor,
    params_nbytes,
    start_server,
    write_port_file,
)
from eddl.net.chunks import MAX_INLINE_MODEL_BYTES
from eddl.net.redirect import not_leader
from eddl.net.sparse import wire_bytes
from eddl.profiler import LinkTracker
from eddl.profiler.probe import PROBE_SERVICE_NAME, ProbeServicer
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, probe_pb2_grpc
from eddl.security.enrol import Renewer
from eddl.security.node import NodeSecurity, bootstrap_address, prepare
from eddl.security.tls import Identity
from eddl.worker.config import WorkerConfig
from eddl.worker.data import SampleSource, SampleSourceError
from eddl.worker.executor import Executor, TaskResult, TaskSpec
from eddl.worker.link import Backoff, LeaderLink
from eddl.worker.presence import HostPresence, Presence
from eddl.worker.training import NumpyExecutor
from eddl.worker.transfer import inline_model, receive_model, sparse_records, update_stream
from eddl.worker.unreachable import UnreachableReporter

__all__ = ["JoinRefusedError", "TaskTiming", "WorkerDaemon", "start_endpoint", "task_from_proto"]

log = get_logger("worker")
T = TypeVar("T")

_REJOIN_REASONS = {"unknown-node", "stale-term"}
# The leader away, too slow, or ending the call itself (CANCELLED: a leader that stops, or
# one overloaded enough to drop calls): the daemon tries again, at the next leader it knows.
# How long a stopping worker waits for the answer to an update it is pushing.
STOP_PUSH_GRACE_S = 5.0
_LINK_DOWN = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


@dataclass(frozen=True)
class TaskTiming:
    """How long one task took this node, told to the ``on_task`` hooks once its update was
    taken: ``seconds`` from the task's receipt to the leader's reply (model pull, samples,
    training, update push), ``train_seconds`` the executor's training alone."""

    node_id: str
    samples: int
    seconds: float
    train_seconds: float


class JoinRefusedError(RuntimeError):
    """The leader refused the node (wrong join token): retrying cannot help."""


def _reason(exc: grpc.aio.AioRpcError) -> str:
    for key, value in exc.trailing_metadata() or ():
        if key == REASON_KEY:
            return str(value)
    return ""


def task_from_proto(task: cluster_pb2.Task) -> TaskSpec:
    """The executor's view of a task off the wire (total: checking it is the executor's)."""
    return TaskSpec(
        job_id=task.envelope.job_id,
        task_id=task.task_id,
        version=task.envelope.model_version,
        dataset=task.dataset,
        indexes=tuple(task.indexes),
        algorithm=task.algorithm,
        model_json=task.model_json,
        hyper_json=task.hyper_json,
        epochs=max(1, task.epochs),  # 0 is the wire's "not set"
        layer=task.layer,
        seed=task.seed,
    )


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
        # Says where the worker is trying and for how long while no leader answers.
        self.unreachable = UnreachableReporter()
        self.samples = SampleSource(config.datasets, self._fetch_samples)
        self.term = 0
        self.heartbeat_s = 1.0
        self.jitter = 0.1
        self.state = "idle"
        self.tasks_done = 0
        self.tasks_failed = 0  # reported to the leader as failed
        self.samples_done = 0
        self.samples_per_second = 0.0
        self._joined = asyncio.Event()
        self._membership_changed = asyncio.Event()
        self.endpoint: RunningServer | None = None
        self._join_lock = asyncio.Lock()
        self._link_broken = False
        self._stop = asyncio.Event()
        self._model: tuple[str, int, Params] | None = None
        self._current: asyncio.Task[None] | None = None
        # The next GetTask, asked while the last task's update was pushed (see _ask_ahead).
        self._ahead: asyncio.Task[cluster_pb2.GetTaskReply] | None = None
        self._pushed_task = ""  # the task whose update the leader took last
        # Passive link estimates from the model pulls and update pushes this worker makes.
        self.links = LinkTracker()
        # The last task's model pull (0 when cached) and the last update push, in seconds:
        # the fixed cost per task the leader sizes tasks around.
        self._pull_s = 0.0
        self._push_s = 0.0
        self._pushed_to = ""  # the leader that answered the last push (for its log line)
        self.on_serving: list[Callable[[], None]] = []  # called once the daemon runs
        self.on_task: list[Callable[[TaskTiming], None]] = []  # called per task pushed
        # Called with the token a heartbeat reply carries when the root promoted this
        # --can-lead worker's group over mTLS (eddl.worker.leading).
        self.on_lead_token: list[Callable[[str], None]] = []

    @property
    def role(self) -> str:
        return self.presence.role

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def joined(self) -> bool:
        """Whether the node is joined to a leader right now."""
        return self._joined.is_set()

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
                beats = tg.create_task(self._heartbeat_loop())
                work = tg.create_task(self._task_loop())
                health = tg.create_task(self._health_loop()) if self.endpoint else None
                await self._stop.wait()
                beats.cancel()
                await self._finish_push()
                work.cancel()
                for task in (health, renewer):
                    if task is not None:
                        task.cancel()
        finally:
            try:
                if self._joined.is_set():
                    await self._leave()
            finally:
                await self.link.close()
                if self.endpoint is not None:
                    await self.endpoint.stop(grace=1.0)
        log.info("worker stopped", node=self.node_id, tasks_done=self.tasks_done)

    async def _finish_push(self) -> None:
        """A stop that finds an update on its way lets the leader answer it (bounded): the
        work is done, and the leader's answer is what says whether it was taken."""
        current = self._current
        if current is not None and self.state == "pushing":
            await asyncio.wait({current}, timeout=STOP_PUSH_GRACE_S)

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
        serving: bool | None = None
        while True:
            self._membership_changed.clear()
            joined = self._joined.is_set()
            if joined != serving:
                await self.endpoint.set_serving(joined)
                serving = joined
            await self._membership_changed.wait()

    async def _prefetch(self) -> None:
        """Load the local datasets now, so the first task does not wait for the disk."""
        for name in self.config.datasets:
            try:
                await asyncio.to_thread(load_dataset, name)
            except (ValueError, OSError) as exc:
                log.warning("cannot prefetch dataset", dataset=name, error=str(exc))

    # -- envelope and join ---------------------------------------------------------------------

    def envelope(self, job_id: str = "", version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(
            job_id=job_id, model_version=version, term=self.term, node_id=self.node_id
        )

    def _lost(self, reason: str, *, link_down: bool) -> None:
        if self._joined.is_set():
            log.info("lost the leader", reason=reason, leader=self.link.address)
        self._joined.clear()
        self._membership_changed.set()
        self._link_broken = self._link_broken or link_down
        if link_down:
            self.unreachable.failed(self.link.address, reason, self.link.leaders)

    async def _ensure_joined(self) -> None:
        if self._joined.is_set():
            return
        async with self._join_lock:
            while not self._joined.is_set():
                if self._link_broken:
                    await self.link.next_leader(self.unreachable.last_reason or "rpc failed")
                    self._link_broken = False
                request = await self.join_request()
                try:
                    reply = await self.link.stub.Join(request, timeout=self.config.rpc_timeout_s)
                except grpc.aio.AioRpcError as exc:
                    if await self._followed(exc):
                        continue
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                        raise JoinRefusedError(f"join refused: {exc.details()}") from exc
                    if exc.code() in _LINK_DOWN:
                        self._link_broken = True
                        reason = f"{exc.code().name}: {exc.details()}"
                        self.unreachable.failed(self.link.address, reason, self.link.leaders)
                        continue
                    raise
                self.unreachable.reached(self.link.address)
                self.term = reply.envelope.term
                self.heartbeat_s = max(0.05, reply.heartbeat_interval_ms / 1000.0)
                self.jitter = min(max(reply.heartbeat_jitter, 0.0), 0.5)
                self.link.learn_leaders(list(reply.leaders))
                self.link.succeeded()
                self._joined.set()
                self._membership_changed.set()
                log.info(
                    "joined", leader=self.link.address, term=self.term, heartbeat_s=self.heartbeat_s
                )

    async def _followed(self, exc: grpc.aio.AioRpcError) -> bool:
        """A non-root leader answered: go to the root it names (join there); when it knows no
        root (an election is under way), back off and try the next leader address."""
        redirect = not_leader(exc, self.link.address)
        if redirect is None:
            return False
        if redirect.hint:
            await self.link.follow(redirect.hint)
        else:
            await self.link.next_leader(f"{self.link.address} knows no root yet")
        return True

    async def join_request(self) -> cluster_pb2.JoinRequest:
        """What this node says about itself when it joins (again)."""
        return await self.presence.join_request(self)

    async def _call(self, fn: Callable[[cluster_pb2_grpc.ClusterStub], Awaitable[T]]) -> T:
        """Run ``fn`` against the leader, joining (again) first when needed."""
        while True:
            await self._ensure_joined()
            try:
                result = await fn(self.link.stub)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _LINK_DOWN:
                    self._lost(f"{exc.code().name}: {exc.details()}", link_down=True)
                    continue
                if _reason(exc) in _REJOIN_REASONS or await self._followed(exc):
                    self._lost(exc.details() or "rejoin", link_down=False)
                    continue
                raise
            self.link.succeeded()
            return result

    # -- heartbeats ------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._ensure_joined()
            request = await self.beat_request()
            try:
                reply = await self.link.stub.Heartbeat(request, timeout=self.config.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _LINK_DOWN:
                    self._lost(f"heartbeat {exc.code().name}", link_down=True)
                elif _reason(exc) in _REJOIN_REASONS or await self._followed(exc):
                    self._lost(exc.details() or "rejoin", link_down=False)
                else:
                    log.warning("heartbeat refused", code=exc.code().name, detail=exc.details())
            else:
                if not reply.known:
                    self._lost("leader does not know this node", link_down=False)
                    continue
                if reply.cancel_task and self._current is not None:
                    self._current.cancel()
                if reply.heartbeat_interval_ms:
                    self.heartbeat_s = max(0.05, reply.heartbeat_interval_ms / 1000.0)
                if reply.lead_token:
                    for hook in self.on_lead_token:
                        hook(reply.lead_token)
                self.link.learn_leaders(list(reply.leaders))
            delay = self.heartbeat_s * (1 + self._rng.uniform(-self.jitter, self.jitter))
            await asyncio.sleep(delay)

    async def beat_request(self) -> cluster_pb2.HeartbeatRequest:
        """One heartbeat of this node."""
        return await self.presence.beat_request(self)

    # -- tasks -----------------------------------------------------------------------------------

    async def _get_task(
        self, stub: cluster_pb2_grpc.ClusterStub, after_task: str = ""
    ) -> cluster_pb2.GetTaskReply:
        # Built per attempt: a rejoin in between changes the term the envelope carries.
        wait_ms = self.config.poll_ms
        held = self._model
        request = cluster_pb2.GetTaskRequest(
            envelope=self.envelope(),
            wait_ms=wait_ms,
            after_task_id=after_task,
            # The task's model inside the reply when small (no PullModel), unless held.
            inline_model_bytes=min(self.config.max_model_bytes, MAX_INLINE_MODEL_BYTES),
            held_job_id=held[0] if held is not None else "",
            held_version=held[1] if held is not None else 0,
        )
        reply: cluster_pb2.GetTaskReply = await stub.GetTask(
            request, timeout=wait_ms / 1000.0 + self.config.rpc_timeout_s
        )
        return reply

    def _ask_ahead(self, task_id: str) -> None:
        """Ask for the next task now, while ``task_id``'s update is pushed: the leader answers
        once it has taken (or refused) that update, as it would a GetTask sent after it."""
        self._drop_ahead()
        self._ahead = asyncio.create_task(
            self._call(lambda stub: self._get_task(stub, after_task=task_id))
        )

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None

    async def _next_reply(self) -> cluster_pb2.GetTaskReply:
        """The answer asked ahead during the last push, else a GetTask sent now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            reply = await ahead
            # A leader that does not know ``after_task_id`` may answer with the task being
            # pushed (a retried ask gets the task held): it is done now, so ask again.
            if reply.WhichOneof("outcome") != "task" or reply.task.task_id != self._pushed_task:
                return reply
        return await self._call(self._get_task)

    def _keep_inline(self, task: TaskSpec, reply: cluster_pb2.GetTaskReply) -> None:
        """Keep the model the reply carries for ``task``; a bad one is left to PullModel."""
        try:
            got = inline_model(reply, self.config.max_model_bytes)
        except ChunkError as exc:
            log.warning("inline model refused", task=task.task_id, error=str(exc))
            return
        if got is not None and got[0] == task.version:
            self._model = (task.job_id, got[0], got[1])

    async def _task_loop(self) -> None:
        try:
            await self._tasks()
        finally:
            self._drop_ahead()

    async def _tasks(self) -> None:
        while True:
            reply = await self._next_reply()
            outcome = reply.WhichOneof("outcome")
            if outcome == "task":
                task = task_from_proto(reply.task)
                self._keep_inline(task, reply)
                await self._run_cancellable(task)
            elif outcome == "retry_after_ms":
                await asyncio.sleep(min(reply.retry_after_ms, 5000) / 1000.0)
            else:
                await asyncio.sleep(self.config.poll_ms / 1000.0)

    async def _run_cancellable(self, task: TaskSpec) -> None:
        """Run ``task``; a heartbeat reply with ``cancel_task`` (the leader took the task back,
        or its job ended) cancels it, so no time goes into work that would be refused."""
        job = asyncio.create_task(self._run_task(task))
        self._current = job
        try:
            await job
        except asyncio.CancelledError:
            self._drop_ahead()
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the daemon is stopping
            log.info("task cancelled by the leader", task=task.task_id)
        finally:
            self._current = None
            self.state = "idle"

    async def _run_task(self, task: TaskSpec) -> None:
        job_id, version = task.job_id, task.version
        started = time.monotonic()
        log.info(
            "task",
            node=self.node_id,
            task=task.task_id,
            job=job_id,
            version=version,
            samples=task.num_samples,
        )
        try:
            self.state = "training"
            self.executor.check(task)
            self._pull_s = 0.0
            params = await self._pull_model(job_id, version)
            fetch_started = time.monotonic()
            if self.executor.wants_samples(task):
                x, y = await self.samples.get(job_id, task.dataset, list(task.indexes))
            else:  # a device task that holds its own data (meta-learning)
                x, y = np.zeros((0, 0), np.uint8), np.zeros(0, np.int64)
            fetch_s = time.monotonic() - fetch_started
            result = await self.executor.execute(task, params, x, y)
            self.state = "pushing"
            self._ask_ahead(task.task_id)
            reply = await self._push(task, result)
            self._pushed_task = task.task_id
        except grpc.aio.AioRpcError as exc:
            self._drop_ahead()  # the push failed: ask afresh, as before the ask ahead
            # The leader refused this task's model or update (stale version, cancelled job):
            # the task is void, the next GetTask brings a fresh one.
            log.warning(
                "task refused",
                node=self.node_id,
                task=task.task_id,
                code=exc.code().name,
                detail=exc.details(),
            )
            return
        except Exception as exc:
            # Whatever went wrong with this task (its model or samples, the trainer, memory),
            # the node stays up: it tells the leader, which re-queues the samples and fails
            # the job if its tasks keep failing, and asks for the next task.
            self._drop_ahead()
            await self._task_failed(task, exc)
            return
        finally:
            self.state = "idle"
        self.tasks_done += 1
        self.samples_done += task.num_samples
        if result.busy_seconds > 0:
            rate = result.samples / result.busy_seconds
            self.samples_per_second = (
                rate if self.samples_per_second == 0 else 0.7 * self.samples_per_second + 0.3 * rate
            )
        timing = TaskTiming(
            self.node_id, result.samples, time.monotonic() - started, result.train_seconds
        )
        for hook in self.on_task:
            hook(timing)
        log.info(
            "update pushed",
            node=self.node_id,
            task=task.task_id,
            outcome=reply.outcome,
            version=reply.envelope.model_version,
            leader=self._pushed_to,
            term=reply.envelope.term,
            busy_s=round(result.busy_seconds, 3),
            train_s=round(result.train_seconds, 3),
            link_s=round(result.link_seconds, 3),
            pull_s=round(self._pull_s, 3),
            fetch_s=round(fetch_s, 3),
            push_s=round(self._push_s, 3),
            samples=result.samples,
        )

    async def _task_failed(self, task: TaskSpec, exc: Exception) -> None:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        log.error("task failed", node=self.node_id, task=task.task_id, error=reason)
        if self.stopping:
            return  # e.g. a lost device: the Leave that follows re-queues the task
        header = cluster_pb2.UpdateHeader(
            task_id=task.task_id,
            num_samples=task.num_samples,
            layer=task.layer,
            failure=reason,
        )
        job_id, version = task.job_id, task.version

        async def report(stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.PushUpdateReply:
            header.envelope.CopyFrom(self.envelope(job_id, version))
            reply: cluster_pb2.PushUpdateReply = await stub.PushUpdate(
                update_stream(header, {}, self.config.chunk_bytes),
                timeout=self.config.rpc_timeout_s,
            )
            return reply

        try:
            reply = await self._call(report)
        except grpc.aio.AioRpcError as exc2:
            # The task was void already (taken back, job over): nothing more to say.
            log.warning("failure report refused", task=task.task_id, detail=exc2.details())
            return
        self.tasks_failed += 1
        log.info("failure reported", task=task.task_id, outcome=reply.outcome)

    async def _pull_model(self, job_id: str, version: int) -> Params:
        cached = self._model
        if cached is not None and cached[0] == job_id and cached[1] == version:
            return cached[2]

        async def pull(stub: cluster_pb2_grpc.ClusterStub) -> tuple[int, Params]:
            request = cluster_pb2.PullModelRequest(
                envelope=self.envelope(job_id, version), max_chunk_bytes=self.config.chunk_bytes
            )
            return await receive_model(
                stub.PullModel(request, timeout=self.config.rpc_timeout_s),
                self.config.max_model_bytes,
            )

        started = time.monotonic()
        got_version, params = await self._call(pull)
        self._pull_s = time.monotonic() - started
        self._observe_transfer("download", params_nbytes(params), self._pull_s)
        self._model = (job_id, got_version, params)
        return params

    def _observe_transfer(
        self, direction: Literal["upload", "download"], nbytes: int, seconds: float
    ) -> None:
        if seconds > 0 and nbytes > 0:
            self.links.observe_transfer(self.link.address, direction, nbytes, seconds, time.time())

    async def _push(
        self,
        task: TaskSpec,
        result: TaskResult,
    ) -> cluster_pb2.PushUpdateReply:
        params = result.params
        records = sparse_records(result)
        # The reported seconds include the throttle's idle time: the leader schedules on the
        # wall time it observes, which is what makes a throttled worker look slow. Transfers
        # (this task's pull, the previous push, a device's model in and update out) are the
        # task's fixed cost, reported apart.
        overhead = result.overhead_seconds + self._pull_s + self._push_s
        header = cluster_pb2.UpdateHeader(
            task_id=task.task_id,
            num_samples=task.num_samples,
            num_tensors=len(records) if records is not None else len(params),
            total_bytes=(wire_bytes(records) if records is not None else params_nbytes(params)),
            stats=cluster_pb2.TaskStats(
                samples=result.samples,
                steps=result.steps,
                seconds=max(0.0, result.busy_seconds - result.overhead_seconds),
                state_bytes=result.state_bytes,
                overhead_seconds=overhead,
            ),
            layer=task.layer,
        )
        job_id, version = task.job_id, task.version
        chunk_bytes = self.config.chunk_bytes

        async def push(stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.PushUpdateReply:
            header.envelope.CopyFrom(self.envelope(job_id, version))
            self._pushed_to = self.link.address  # the leader behind ``stub``
            reply: cluster_pb2.PushUpdateReply = await stub.PushUpdate(
                update_stream(header, params, chunk_bytes, records),
                timeout=self.config.rpc_timeout_s,
            )
            return reply

        started = time.monotonic()
        reply = await self._call(push)
        self._push_s = time.monotonic() - started
        self._observe_transfer("upload", int(header.total_bytes), self._push_s)
        return reply

    async def _fetch_samples(
        self, job_id: str, dataset: str, indexes: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        async def fetch(stub: cluster_pb2_grpc.ClusterStub) -> tuple[np.ndarray, np.ndarray]:
            request = cluster_pb2.FetchSamplesRequest(
                envelope=self.envelope(job_id), dataset=dataset, indexes=list(indexes)
            )
            xs: list[np.ndarray] = []
            ys: list[np.ndarray] = []
            async for batch in stub.FetchSamples(request, timeout=self.config.rpc_timeout_s):
                xs.append(array_from_tensor(batch.x))
                ys.append(array_from_tensor(batch.y))
            if not xs:
                raise SampleSourceError(f"{dataset}: the leader sent no samples")
            return np.concatenate(xs), np.concatenate(ys)

        return await self._call(fetch)

    async def _leave(self) -> None:
        try:
            await self.link.stub.Leave(
                cluster_pb2.LeaveRequest(envelope=self.envelope(), reason=self.leave_reason),
                timeout=2.0,
            )
            log.info("left the cluster", leader=self.link.address)
        except grpc.aio.AioRpcError as exc:
            log.warning("leave failed", code=exc.code().name, detail=exc.details())
