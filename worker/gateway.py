"""The gateway: microcontrollers join the cluster through a serial bridge.

``eddl-worker --mcu URL [--mcu URL ...]`` runs a :class:`Gateway`. For each device it opens
the serial link, reads HELLO, times a short benchmark (:func:`benchmark_device`) and starts an
:class:`McuAgent`: a :class:`~eddl.worker.daemon.WorkerDaemon` that joins the leader *as the
device* (:class:`McuPresence`: role ``mcu``, its own node id, a profile made of HELLO and the
measurements), beats for it and hands its tasks to the device's executor
(:class:`~eddl.worker.mcu_executor.McuExecutor`: SETUP / LOAD / TRAIN / READ). The result goes
back as an ordinary update.

A device that stops answering (QEMU killed, cable pulled, a link error that retransmission
cannot mend) is *lost*: its agent sends ``Leave`` with the reason, so the leader re-queues the
task at once, and the gateway looks for the device again every ``mcu_retry_s``; when it
answers HELLO it joins again as the same node. Serial corruption never reaches the model:
frames are CRC-checked and retransmitted by the driver, and a task whose link fails is
abandoned, not pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from pathlib import Path

from eddl import __version__
from eddl.log import get_logger
from eddl.mcu.driver import Device
from eddl.mcu.plan import offered_algorithms
from eddl.mcu.protocol import Hello
from eddl.net import RunningServer
from eddl.proto.v1 import cluster_pb2, profile_pb2
from eddl.security.enrol import Renewer
from eddl.security.node import NodeSecurity
from eddl.security.tls import Identity
from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import TaskTiming, WorkerDaemon, node_security, start_endpoint
from eddl.worker.mcu_bench import BenchmarkResult, benchmark_device
from eddl.worker.mcu_executor import LINK_FAILURES, McuCounters, McuExecutor
from eddl.worker.presence import Presence

__all__ = ["Gateway", "McuAgent", "McuPresence"]

log = get_logger("worker")


class McuPresence(Presence):
    """A microcontroller as the leader sees it: HELLO, the gateway's benchmark of it, and a
    heartbeat only while it still answers."""

    role = "mcu"

    def __init__(
        self,
        config: WorkerConfig,
        url: str,
        hello: Hello,
        bench: BenchmarkResult | None,
        executor: McuExecutor,
    ) -> None:
        self.config = config
        self.url = url
        self.hello = hello
        self.bench = bench
        self.executor = executor

    def mcu_profile(self) -> profile_pb2.McuProfile:
        h = self.hello
        return profile_pb2.McuProfile(
            gateway_id=self.config.node_id,
            device=self.url,
            board=h.board,
            firmware_version=h.firmware_version,
            ram_bytes=h.ram_bytes,
            flash_bytes=h.flash_bytes,
            arena_bytes=h.arena_bytes,
            max_payload=h.max_payload,
            algorithms=offered_algorithms(h.kernels),
            tick_hz=h.tick_hz,
            max_layers=h.max_layers,
            link_bytes_per_second=self.bench.link_bytes_per_second if self.bench else 0.0,
            ticks_per_sample=self.bench.ticks_per_sample if self.bench else 0.0,
            benchmark_model=self.bench.model if self.bench else "",
            max_buffer=self.config.mcu_max_buffer,
            float_samples=h.float_samples,
        )

    async def join_request(self, node: WorkerDaemon) -> cluster_pb2.JoinRequest:
        h = self.hello
        static = profile_pb2.StaticProfile(
            node_id=node.node_id,
            role=self.role,
            hostname=socket.gethostname(),
            architecture=h.board,
            logical_cores=1,
            total_memory_bytes=h.ram_bytes,
            os_name="eddl-firmware",
            os_release=h.firmware_version,
        )
        info = cluster_pb2.NodeInfo(
            hostname=socket.gethostname(),
            cpu_count=1,
            memory_bytes=h.ram_bytes,
            benchmark_samples_per_second=self.bench.samples_per_second if self.bench else 0.0,
            datasets=list(self.config.datasets),
            throttle=1.0,
            version=__version__,
        )
        return cluster_pb2.JoinRequest(
            envelope=node.envelope(),
            role=self.role,
            join_token=self.config.join_token,
            info=info,
            profile=profile_pb2.Profile(static=static, mcu=self.mcu_profile()),
        )

    async def beat_request(self, node: WorkerDaemon) -> cluster_pb2.HeartbeatRequest:
        """A beat for the device, after checking it still answers."""
        await self.executor.check_device()
        return cluster_pb2.HeartbeatRequest(
            envelope=node.envelope(),
            load=cluster_pb2.NodeLoad(samples_per_second=node.samples_per_second, state=node.state),
        )


class McuAgent:
    """One microcontroller as a cluster node, spoken for by its gateway: a
    :class:`~eddl.worker.daemon.WorkerDaemon` with the device's executor and presence."""

    def __init__(
        self,
        config: WorkerConfig,
        node_id: str,
        url: str,
        device: Device,
        bench: BenchmarkResult | None,
        security: NodeSecurity | None = None,
    ) -> None:
        assert device.info is not None
        self.node_id = node_id
        self.url = url
        self.device = device
        self.hello: Hello = device.info
        self.bench = bench
        self.executor = McuExecutor(
            device,
            max_buffer=config.mcu_max_buffer,
            train_timeout=config.mcu_train_timeout_s,
            verify=config.mcu_verify,
            name=node_id,
            on_lost=self._device_lost,
        )
        presence = McuPresence(config, url, self.hello, bench, self.executor)
        self.daemon = WorkerDaemon(
            config,
            self.executor,
            node_id=node_id,
            serve=False,
            presence=presence,
            security=security or NodeSecurity("off"),
        )

    @property
    def counters(self) -> McuCounters:
        return self.executor.counters

    @property
    def lost(self) -> str | None:
        """Why the device was lost, or None while it answers."""
        return self.executor.lost

    @property
    def joined(self) -> bool:
        return self.daemon.joined

    async def run(self) -> None:
        await self.daemon.run()

    def request_stop(self) -> None:
        self.daemon.request_stop()

    def _device_lost(self, reason: str) -> None:
        # The daemon's Leave carries the reason, so the leader re-queues the task at once.
        self.daemon.leave_reason = f"device lost: {reason}"[:200]
        log.warning("device lost", node=self.node_id, device=self.url, reason=reason)
        self.daemon.request_stop()


class Gateway:
    """Keeps one :class:`McuAgent` in the cluster per reachable device in ``config.mcu``."""

    def __init__(self, config: WorkerConfig) -> None:
        if not config.mcu:
            raise ValueError("a gateway needs at least one device (worker.mcu)")
        self.config = config
        self.agents: dict[str, McuAgent | None] = dict.fromkeys(config.mcu_node_ids())
        self.joins: dict[str, int] = dict.fromkeys(config.mcu_node_ids(), 0)
        self.losses: dict[str, int] = dict.fromkeys(config.mcu_node_ids(), 0)
        self._stop = asyncio.Event()
        self.endpoint: RunningServer | None = None
        # The gateway's certificate (or session): every device's daemon acts under it.
        self.security = NodeSecurity("off")
        self.on_serving: list[Callable[[], None]] = []  # called once the gateway runs
        self.on_task: list[Callable[[TaskTiming], None]] = []  # handed to each device's daemon

    def request_stop(self) -> None:
        self._stop.set()
        for agent in self.agents.values():
            if agent is not None:
                agent.request_stop()

    async def run(self) -> None:
        """Bridge every device until :meth:`request_stop`; each joined device leaves then.

        With ``bind`` set, the gateway serves health (SERVING while at least one device is
        joined to a leader), reflection and the Probe service, like a worker.
        """
        log.info("gateway starting", node=self.config.node_id, devices=self.config.mcu)
        self.security = await node_security(self.config, self.config.node_id)
        if self.config.bind:
            self.endpoint = await start_endpoint(self.config, self.security)
        for hook in self.on_serving:
            hook()
        try:
            async with asyncio.TaskGroup() as tg:
                health = tg.create_task(self._health_loop()) if self.endpoint else None
                renewer = None
                if self.security.identity is not None:
                    renewer = tg.create_task(self._renewer().run())
                devices = zip(self.config.mcu, self.config.mcu_node_ids(), strict=True)
                keepers = [tg.create_task(self._keep(url, node)) for url, node in devices]
                await asyncio.gather(*keepers)
                for task in (health, renewer):
                    if task is not None:
                        task.cancel()
        finally:
            if self.endpoint is not None:
                await self.endpoint.stop(grace=1.0)
        log.info("gateway stopped", node=self.config.node_id)

    def _renewer(self) -> Renewer:
        security = self.security
        assert security.identity is not None

        async def renewed(identity: Identity) -> None:
            security.renewed(identity)  # each device's link reopens on its next call

        return Renewer(
            Path(self.config.pki_dir),
            security.identity,
            lambda: self.config.leaders,
            renewed,
        )

    @property
    def joined(self) -> list[str]:
        """Node ids of the devices joined to a leader right now."""
        return [n for n, a in self.agents.items() if a is not None and a.joined]

    async def _health_loop(self, period_s: float = 0.5) -> None:
        assert self.endpoint is not None
        serving: bool | None = None
        while True:
            now = bool(self.joined)
            if now != serving:
                await self.endpoint.set_serving(now)
                serving = now
            await asyncio.sleep(period_s)

    async def _open(self, url: str) -> Device:
        cfg = self.config
        return await asyncio.to_thread(
            Device.open,
            url,
            timeout=cfg.mcu_reply_timeout_s,
            baudrate=cfg.mcu_baud,
            connect_timeout=min(cfg.mcu_retry_s, 5.0),
        )

    async def _keep(self, url: str, node_id: str) -> None:
        """Open, benchmark and join the device; after a loss, look for it again."""
        cfg = self.config
        missing_logged = False
        while not self._stop.is_set():
            try:
                device = await self._open(url)
            except LINK_FAILURES as exc:
                if not missing_logged:
                    log.warning("device not answering", node=node_id, device=url, error=str(exc))
                    missing_logged = True
                await self._sleep(cfg.mcu_retry_s)
                continue
            missing_logged = False
            try:
                bench = await asyncio.to_thread(
                    benchmark_device,
                    device,
                    max_buffer=cfg.mcu_max_buffer,
                    timeout=cfg.mcu_train_timeout_s,
                )
                agent = McuAgent(cfg, node_id, url, device, bench, self.security)
            except LINK_FAILURES as exc:
                log.warning("device failed its benchmark", node=node_id, error=str(exc))
                await asyncio.to_thread(device.close)
                await self._sleep(cfg.mcu_retry_s)
                continue
            log.info(
                "device found",
                node=node_id,
                device=url,
                board=agent.hello.board,
                arena=agent.hello.arena_bytes,
                firmware=agent.hello.firmware_version,
                float_samples=agent.hello.float_samples,
                ticks_per_sample=round(bench.ticks_per_sample, 1) if bench else None,
            )
            agent.daemon.on_task.extend(self.on_task)
            self.agents[node_id] = agent
            self.joins[node_id] += 1
            try:
                if not self._stop.is_set():
                    await agent.run()
            finally:
                self.agents[node_id] = None
                await asyncio.to_thread(device.close)
            if agent.lost is not None:
                self.losses[node_id] += 1
                await self._sleep(cfg.mcu_retry_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()
