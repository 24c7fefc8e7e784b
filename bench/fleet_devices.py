"""Virtual devices for the fleet simulator: profiles, paced links, and the hosts that run them.

A virtual device is a real :class:`~eddl.worker.daemon.WorkerDaemon` (the worker's own join,
heartbeat, ``GetTask``, ``PullModel`` and ``PushUpdate`` code over real gRPC) with two parts
swapped for the device it plays:

* :class:`SimExecutor` "trains" by sleeping the profile's compute time for the task's samples
  and epochs, and returns a correctly shaped update: every weight of the model it started from
  shrunk by 0.01% (deterministic, finite, small enough for the leader's sanity bound). Its
  model pull and its update push are paced by the device's :class:`LinkPacer` (the real
  transfer on loopback is near instant; the pacer adds what the profile's link would take).
* :class:`SimPresence` joins with the profile's figures (benchmark speed, one core) and beats
  the daemon's own measured speed, without reading this host's load.

Devices hold their shard (``wants_samples`` is False), so no samples cross the root's link.

:class:`DeviceProfile` comes from an ``eddl profile --json`` output (the compute estimate of
the job's algorithm, the first link estimate); ``bench/fleet_profiles/`` holds three examples.
:func:`shard` says which devices of a fleet one host runs (device ``i`` on host
``i mod hosts``), so several host processes, on this machine or others, share one fleet; each
host runs its devices on one asyncio loop (:class:`FleetHost`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eddl import __version__
from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.net import params_nbytes
from eddl.proto.v1 import cluster_pb2, profile_pb2
from eddl.security.node import NodeSecurity
from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import TaskTiming, WorkerDaemon
from eddl.worker.executor import Executor, TaskResult, TaskSpec
from eddl.worker.presence import Presence

__all__ = [
    "PROFILES_DIR",
    "DeviceProfile",
    "FleetHost",
    "LinkPacer",
    "SimExecutor",
    "SimPresence",
    "load_profiles",
    "shard",
]

log = get_logger("bench.fleet")
PROFILES_DIR = Path(__file__).with_name("fleet_profiles")
Direction = Literal["upload", "download"]
_SHRINK = np.float32(1.0 - 1e-4)


class ProfileError(ValueError):
    """A device profile that cannot drive a virtual device."""


def _positive(name: str, value: object) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ProfileError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DeviceProfile:
    """What a virtual device plays: its training speed and its link to the leader."""

    name: str
    samples_per_second: float
    upload_bytes_per_second: float
    download_bytes_per_second: float
    rtt_seconds: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ProfileError("a device profile needs a name")
        _positive("samples_per_second", self.samples_per_second)
        _positive("upload_bytes_per_second", self.upload_bytes_per_second)
        _positive("download_bytes_per_second", self.download_bytes_per_second)
        if not math.isfinite(self.rtt_seconds) or self.rtt_seconds < 0:
            raise ProfileError(f"rtt_seconds must be >= 0, got {self.rtt_seconds!r}")

    @classmethod
    def from_profile(cls, name: str, data: Mapping[str, Any], algorithm: str) -> DeviceProfile:
        """From ``eddl profile --json`` output: the compute estimate for ``algorithm`` (else
        the first one) and the first link estimate with both bandwidths."""
        compute = data.get("compute")
        network = data.get("network")
        if not isinstance(compute, list) or not compute:
            raise ProfileError(f"{name}: no compute estimate (run eddl profile --benchmark)")
        if not isinstance(network, list) or not network:
            raise ProfileError(f"{name}: no link estimate (run eddl profile --probe)")
        speed = next((c for c in compute if c.get("algorithm") == algorithm), compute[0])
        link = next(
            (n for n in network if n.get("upload_bytes_per_second")),
            network[0],
        )
        return cls(
            name=name,
            samples_per_second=_positive(
                f"{name}: samples_per_second", speed.get("samples_per_second")
            ),
            upload_bytes_per_second=_positive(
                f"{name}: upload_bytes_per_second", link.get("upload_bytes_per_second")
            ),
            download_bytes_per_second=_positive(
                f"{name}: download_bytes_per_second", link.get("download_bytes_per_second")
            ),
            rtt_seconds=float(link.get("rtt_seconds") or 0.0),
        )


def load_profiles(paths: Sequence[Path], algorithm: str) -> list[DeviceProfile]:
    """Profiles from ``eddl profile --json`` files, named after the files."""
    if not paths:
        raise ProfileError("no device profiles given")
    out = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ProfileError(f"{path}: not an eddl profile (a JSON object)")
        out.append(DeviceProfile.from_profile(path.stem, data, algorithm))
    return out


class LinkPacer:
    """One device's link: transfers in one direction go one after the other, each taking
    half the round trip plus its bytes over the direction's bandwidth."""

    def __init__(self, profile: DeviceProfile, clock: Callable[[], float] = time.monotonic) -> None:
        self.profile = profile
        self._clock = clock
        self._free_at: dict[Direction, float] = {"upload": 0.0, "download": 0.0}

    def seconds(self, nbytes: int, direction: Direction) -> float:
        """What moving ``nbytes`` takes on an idle link."""
        if nbytes < 0:
            raise ValueError(f"a transfer of {nbytes} bytes")
        p = self.profile
        bps = p.upload_bytes_per_second if direction == "upload" else p.download_bytes_per_second
        return p.rtt_seconds / 2 + nbytes / bps

    def reserve(self, nbytes: int, direction: Direction) -> float:
        """Book a transfer starting now; returns the seconds until it is through (queued
        behind the transfers already booked in that direction)."""
        now = self._clock()
        start = max(now, self._free_at[direction])
        self._free_at[direction] = end = start + self.seconds(nbytes, direction)
        return end - now

    async def transfer(self, nbytes: int, direction: Direction) -> float:
        delay = self.reserve(nbytes, direction)
        await asyncio.sleep(delay)
        return delay


class SimExecutor(Executor):
    """Trains by sleeping the profile's compute time; returns the model shrunk by 0.01%."""

    def __init__(self, profile: DeviceProfile, pacer: LinkPacer) -> None:
        self.profile = profile
        self.pacer = pacer
        self._pulled: tuple[str, int] | None = None  # the model the daemon holds

    def wants_samples(self, task: TaskSpec) -> bool:
        return False  # a device holds its shard

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        link = 0.0
        if self._pulled != (task.job_id, task.version):  # the daemon pulled it for this task
            link += await self.pacer.transfer(params_nbytes(params), "download")
            self._pulled = (task.job_id, task.version)
        samples = task.num_samples * task.epochs
        train = samples / self.profile.samples_per_second
        await asyncio.sleep(train)
        update = {name: value * _SHRINK for name, value in params.items()}
        link += await self.pacer.transfer(params_nbytes(update), "upload")
        return TaskResult(
            params=update,
            samples=samples,
            steps=samples,
            train_seconds=train,
            busy_seconds=train + link,
            state_bytes=0,
            link_seconds=link,
            overhead_seconds=link,
        )


class SimPresence(Presence):
    """A virtual device as the leader sees it: the profile's benchmark speed, one core."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    async def join_request(self, node: WorkerDaemon) -> cluster_pb2.JoinRequest:
        static = profile_pb2.StaticProfile(
            node_id=node.node_id, role=self.role, hostname="fleet", logical_cores=1
        )
        return cluster_pb2.JoinRequest(
            envelope=node.envelope(),
            role=self.role,
            join_token=node.config.join_token,
            info=cluster_pb2.NodeInfo(
                hostname=f"fleet-{self.profile.name}",
                cpu_count=1,
                benchmark_samples_per_second=self.profile.samples_per_second,
                throttle=1.0,
                version=__version__,
            ),
            profile=profile_pb2.Profile(static=static),
        )

    async def beat_request(self, node: WorkerDaemon) -> cluster_pb2.HeartbeatRequest:
        return cluster_pb2.HeartbeatRequest(
            envelope=node.envelope(),
            load=cluster_pb2.NodeLoad(samples_per_second=node.samples_per_second, state=node.state),
        )


def shard(devices: int, hosts: int, index: int) -> range:
    """The device numbers host ``index`` of ``hosts`` runs: ``index, index + hosts, ...``."""
    if devices < 1 or hosts < 1:
        raise ValueError("devices and hosts must be >= 1")
    if not 0 <= index < hosts:
        raise ValueError(f"host index {index} is outside 0..{hosts - 1}")
    return range(index, devices, hosts)


class FleetHost:
    """The devices of one host, each a :class:`WorkerDaemon` on this loop (profiles and
    ``leaders`` taken in turn by device number: several leaders are the groups'
    sub-leaders). ``executor`` makes each device's executor from its profile and link
    (default :class:`SimExecutor`; :mod:`bench.fleet_accuracy` trains for real), and
    ``datasets`` are the datasets each device holds. Each has its own (insecure, loopback)
    session and TCP connection, as a worker process would: devices sharing one session would
    join one at a time, and gRPC would otherwise carry every device's calls over one shared
    connection."""

    def __init__(
        self,
        leaders: Sequence[str],
        join_token: str,
        profiles: Sequence[DeviceProfile],
        numbers: range,
        *,
        prefix: str = "dev",
        seed: int = 0,
        ramp_per_s: float = 20.0,
        executor: Callable[[DeviceProfile, LinkPacer], Executor] | None = None,
        datasets: Sequence[str] = (),
    ) -> None:
        if not (math.isfinite(ramp_per_s) and ramp_per_s > 0):
            raise ValueError(f"ramp_per_s must be a positive number, got {ramp_per_s!r}")
        self.ramp_per_s = ramp_per_s
        if not profiles:
            raise ProfileError("no device profiles given")
        if not leaders:
            raise ValueError("no leader addresses given")
        self.daemons: list[WorkerDaemon] = []
        for i in numbers:
            profile = profiles[i % len(profiles)]
            config = WorkerConfig(
                leaders=[leaders[i % len(leaders)]],
                node_id=f"{prefix}{i:05d}",
                join_token=join_token,
                datasets=list(datasets),
                bind="",
                security="insecure",
                rpc_timeout_s=60.0,
                poll_ms=5000,
            )
            make = executor or SimExecutor
            daemon = WorkerDaemon(
                config,
                make(profile, LinkPacer(profile)),
                rng=random.Random(seed * 1_000_003 + i),
                serve=False,
                presence=SimPresence(profile),
                security=NodeSecurity("insecure", own_connection=True),
            )
            daemon.on_task.append(self._synced)
            self.daemons.append(daemon)

        # A device whose daemon ended with an error (it stays down): "node: error", in order.
        self.failures: list[str] = []
        self.started = 0  # devices whose daemon was started
        # Each task's synchronisation: its time less the training (model pull, update push,
        # both over the paced link), EDDL's t_sync; cleared by the caller between windows.
        self.syncs: list[float] = []

    def _synced(self, timing: TaskTiming) -> None:
        self.syncs.append(max(0.0, timing.seconds - timing.train_seconds))

    @property
    def joined(self) -> int:
        return sum(d.joined for d in self.daemons)

    @property
    def tasks_done(self) -> int:
        return sum(d.tasks_done for d in self.daemons)

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.request_stop()

    async def run(self) -> None:
        """Run every device until :meth:`stop` (each then leaves the cluster); a device that
        fails is counted in :attr:`failures` and the others go on. Devices come online
        ``ramp_per_s`` a second, as a fleet does: a thousand joins at once would queue at the
        leader behind each other for tens of seconds."""
        async with asyncio.TaskGroup() as tg:
            for k, daemon in enumerate(self.daemons):
                tg.create_task(self._device(daemon, k / self.ramp_per_s))

    async def _device(self, daemon: WorkerDaemon, delay: float) -> None:
        await asyncio.sleep(delay)
        if daemon.stopping:
            return
        self.started += 1
        try:
            await daemon.run()
        except Exception as exc:  # one device down is a figure of the run, not its end
            while isinstance(exc, ExceptionGroup):
                exc = exc.exceptions[0]
            code = getattr(exc, "code", None)
            what = type(exc).__name__ + (f" {code().name}" if callable(code) else "")
            self.failures.append(f"{daemon.node_id}: {what}: {exc}"[:300])
            log.warning("device failed", node=daemon.node_id, error=what, where=_where(exc))


def _where(exc: BaseException) -> str:
    """The innermost frame of EDDL's own code the error went through (file:line function)."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if "/site-packages/" not in code.co_filename:
            where = f"{Path(code.co_filename).name}:{tb.tb_lineno} {code.co_name}"
        tb = tb.tb_next
    return where
