"""The gateway: microcontrollers join the cluster through a serial bridge.

``eddl-worker --mcu URL [--mcu URL ...]`` runs a :class:`Gateway`. For each device it opens
the serial link, reads HELLO, times a short benchmark (:func:`benchmark_device`) and starts an
:class:`McuAgent`: a :class:`~eddl.worker.daemon.WorkerDaemon` that joins the leader *as the
device* (role ``mcu``, its own node id, a profile made of HELLO and the measurements), beats
for it and translates its tasks into SETUP / LOAD / TRAIN / READ
(:class:`~eddl.worker.mcu_runner.McuTaskRunner`). The result goes back as an ordinary update.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import serial

from eddl import __version__
from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.mcu.driver import Device, McuError
from eddl.mcu.plan import MCU_ALGORITHMS
from eddl.mcu.protocol import Hello, ProtocolError
from eddl.net import RunningServer
from eddl.proto.v1 import cluster_pb2, profile_pb2
from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import WorkerDaemon, start_endpoint
from eddl.worker.mcu_runner import BenchmarkResult, McuTaskRunner, benchmark_device
from eddl.worker.training import TaskError, TaskResult

__all__ = ["DeviceLostError", "Gateway", "McuAgent", "McuCounters"]

log = get_logger("worker")

# What a dying link raises: the driver's typed errors, pyserial's, the OS's.
LINK_FAILURES = (McuError, ProtocolError, serial.SerialException, OSError)


class DeviceLostError(TaskError):
    """The device stopped answering during a task; its agent leaves the cluster."""


@dataclass
class McuCounters:
    """What one device did since its agent joined (kept in memory; the logs carry each task)."""

    tasks: int = 0
    samples: int = 0
    busy_seconds: float = 0.0
    link_seconds: float = 0.0
    train_seconds: float = 0.0
    kernel_ticks: int = 0
    verified: int = 0  # tasks checked against the numpy reference (``mcu_verify``)
    mismatches: int = 0


class McuAgent(WorkerDaemon):
    """One microcontroller as a cluster node, spoken for by its gateway."""

    role = "mcu"

    def __init__(
        self,
        config: WorkerConfig,
        node_id: str,
        url: str,
        device: Device,
        bench: BenchmarkResult | None,
    ) -> None:
        super().__init__(config, node_id=node_id, serve=False)
        assert device.info is not None
        self.url = url
        self.device = device
        self.hello: Hello = device.info
        self.bench = bench
        self.mcu = McuTaskRunner(
            device, max_buffer=config.mcu_max_buffer, train_timeout=config.mcu_train_timeout_s
        )
        self.counters = McuCounters()
        self.lost: str | None = None
        self._device_lock = asyncio.Lock()

    # -- what the leader hears ------------------------------------------------------------------

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
            algorithms=[a for a in MCU_ALGORITHMS if "tifed" in h.kernels],
            tick_hz=h.tick_hz,
            max_layers=h.max_layers,
            link_bytes_per_second=self.bench.link_bytes_per_second if self.bench else 0.0,
            ticks_per_sample=self.bench.ticks_per_sample if self.bench else 0.0,
            benchmark_model=self.bench.model if self.bench else "",
            max_buffer=self.config.mcu_max_buffer,
        )

    async def join_request(self) -> cluster_pb2.JoinRequest:
        h = self.hello
        static = profile_pb2.StaticProfile(
            node_id=self.node_id,
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
            envelope=self.envelope(),
            role=self.role,
            join_token=self.config.join_token,
            info=info,
            profile=profile_pb2.Profile(static=static, mcu=self.mcu_profile()),
        )

    async def beat_request(self) -> cluster_pb2.HeartbeatRequest:
        """A beat for the device, after checking it still answers (when it is not training:
        a running task's frames prove that already)."""
        if not self._device_lock.locked():
            async with self._device_lock:
                try:
                    await asyncio.to_thread(self.device.stats)
                except LINK_FAILURES as exc:
                    self._device_lost(f"no answer to STATS: {exc}")
        return cluster_pb2.HeartbeatRequest(
            envelope=self.envelope(),
            load=cluster_pb2.NodeLoad(samples_per_second=self.samples_per_second, state=self.state),
        )

    # -- tasks -------------------------------------------------------------------------------------

    def check_task(self, task: cluster_pb2.Task) -> None:
        if task.algorithm not in MCU_ALGORITHMS:
            offered = ", ".join(MCU_ALGORITHMS)
            raise TaskError(f"{self.node_id} runs {offered}, not {task.algorithm}")
        super().check_task(task)

    async def execute(
        self, task: cluster_pb2.Task, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        algo = self.runner.algorithm(task.algorithm, task.model_json, task.hyper_json)
        async with self._device_lock:
            if self.lost:
                raise DeviceLostError(self.lost)
            try:
                result = await asyncio.to_thread(
                    self.mcu.run,
                    task.algorithm,
                    algo.config,
                    params,
                    x,
                    y,
                    epochs=max(1, task.epochs),
                    layer=task.layer,
                    seed=task.seed,
                )
            except LINK_FAILURES as exc:
                self._device_lost(f"{type(exc).__name__}: {exc}")
                raise DeviceLostError(f"device lost during task {task.task_id}: {exc}") from exc
        if self.config.mcu_verify:
            await self._verify(task, algo, params, x, y, result)
        c = self.counters
        c.tasks += 1
        c.samples += result.samples
        c.busy_seconds += result.busy_seconds
        c.link_seconds += result.link_seconds
        c.train_seconds += result.train_seconds
        c.kernel_ticks += result.kernel_ticks
        return result

    async def _verify(
        self,
        task: cluster_pb2.Task,
        algo: Any,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        result: TaskResult,
    ) -> None:
        """Train the task again with the numpy reference; a device that differs is faulty."""
        reference = await self.runner.run(
            algo, params, x, y, epochs=max(1, task.epochs), layer=task.layer, seed=task.seed
        )
        same = sorted(reference.params) == sorted(result.params) and all(
            np.array_equal(reference.params[k], result.params[k]) for k in reference.params
        )
        self.counters.verified += 1
        if not same:
            self.counters.mismatches += 1
            self._device_lost("its update differs from the numpy reference")
            raise DeviceLostError(f"task {task.task_id}: the device's update is wrong")

    def _device_lost(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            self.leave_reason = f"device lost: {reason}"[:200]
            log.warning("device lost", node=self.node_id, device=self.url, reason=reason)
            self.request_stop()


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
        self.on_serving: list[Callable[[], None]] = []  # called once the gateway runs

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
        if self.config.bind:
            self.endpoint = await start_endpoint(self.config)
        for hook in self.on_serving:
            hook()
        try:
            async with asyncio.TaskGroup() as tg:
                health = tg.create_task(self._health_loop()) if self.endpoint else None
                devices = zip(self.config.mcu, self.config.mcu_node_ids(), strict=True)
                keepers = [tg.create_task(self._keep(url, node)) for url, node in devices]
                await asyncio.gather(*keepers)
                if health is not None:
                    health.cancel()
        finally:
            if self.endpoint is not None:
                await self.endpoint.stop(grace=1.0)
        log.info("gateway stopped", node=self.config.node_id)

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
                agent = McuAgent(cfg, node_id, url, device, bench)
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
                ticks_per_sample=round(bench.ticks_per_sample, 1) if bench else None,
            )
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
            await asyncio.wait_for(self._stop.wait(), seconds)
