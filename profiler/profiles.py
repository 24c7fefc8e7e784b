"""The profile records: typed, immutable dataclasses with a protobuf twin in ``profile.proto``.

A value the device does not expose is ``None`` ("unknown"), never a guess. Constructors validate
what they are given (finite, non-negative, in range) and raise :class:`ProfileError`, so a
record that exists is a record that can be trusted; :mod:`eddl.profiler.convert` turns them into
protobuf messages and back through the same checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "ComputeProfile",
    "DynamicProfile",
    "LinkEstimate",
    "LinkSource",
    "NetworkProfile",
    "Profile",
    "ProfileError",
    "StaticProfile",
    "ThroughputEstimate",
    "ThroughputSource",
]


class ProfileError(ValueError):
    """A profile value is malformed: NaN or infinite, negative, or out of range."""


def _finite(name: str, value: float | None, *, low: float = 0.0, high: float = math.inf) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ProfileError(f"{name} must be finite, got {value!r}")
    if not low <= value <= high:
        raise ProfileError(f"{name} must lie in [{low}, {high}], got {value!r}")


def _count(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ProfileError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class StaticProfile:
    """Hardware and software of a node, read once at start."""

    node_id: str
    role: str
    hostname: str
    architecture: str
    cpu_model: str | None
    logical_cores: int
    physical_cores: int | None
    max_frequency_mhz: float | None
    total_memory_bytes: int
    os_name: str
    os_release: str
    python_version: str
    numpy_version: str
    board_model: str | None = None
    has_temperature: bool = False
    has_throttle_status: bool = False
    has_battery: bool = False

    def __post_init__(self) -> None:
        _count("logical_cores", self.logical_cores)
        if self.logical_cores < 1:
            raise ProfileError(f"logical_cores must be >= 1, got {self.logical_cores}")
        _count("physical_cores", self.physical_cores)
        _finite("max_frequency_mhz", self.max_frequency_mhz)
        _count("total_memory_bytes", self.total_memory_bytes)


@dataclass(frozen=True, slots=True)
class DynamicProfile:
    """A node's state at one instant (``timestamp`` in Unix seconds)."""

    timestamp: float
    cpu_percent: float
    load_average_1m: float | None
    load_average_5m: float | None
    load_average_15m: float | None
    memory_available_bytes: int
    memory_percent: float
    temperature_celsius: float | None
    throttled: bool | None
    throttle_flags: int | None
    battery_percent: float | None
    battery_plugged: bool | None
    process_rss_bytes: int
    process_cpu_percent: float
    cpu_frequency_mhz: float | None = None

    def __post_init__(self) -> None:
        _finite("timestamp", self.timestamp)
        _finite("cpu_percent", self.cpu_percent, high=100.0)
        for name in ("load_average_1m", "load_average_5m", "load_average_15m"):
            _finite(name, getattr(self, name))
        _count("memory_available_bytes", self.memory_available_bytes)
        _finite("memory_percent", self.memory_percent, high=100.0)
        # Sensors report sub-zero temperatures outdoors; only absurd values are refused.
        _finite("temperature_celsius", self.temperature_celsius, low=-273.15, high=1000.0)
        _count("throttle_flags", self.throttle_flags)
        _finite("battery_percent", self.battery_percent, high=100.0)
        _count("process_rss_bytes", self.process_rss_bytes)
        # One process can use several cores: psutil reports up to 100 x cores.
        _finite("process_cpu_percent", self.process_cpu_percent)
        _finite("cpu_frequency_mhz", self.cpu_frequency_mhz)


class ThroughputSource(Enum):
    """Where a throughput figure comes from (values match ``eddl.v1.ThroughputSource``)."""

    MICROBENCHMARK = 1
    RUNTIME = 2


@dataclass(frozen=True, slots=True)
class ThroughputEstimate:
    """Training throughput of one (algorithm, model) on this node, in samples per second."""

    algorithm: str
    model: str
    samples_per_second: float
    confidence: float
    observations: int
    source: ThroughputSource
    measured_at: float

    def __post_init__(self) -> None:
        _finite("samples_per_second", self.samples_per_second)
        if self.samples_per_second <= 0:
            raise ProfileError("samples_per_second must be > 0")
        _finite("confidence", self.confidence, high=1.0)
        _count("observations", self.observations)
        _finite("measured_at", self.measured_at)
        if not isinstance(self.source, ThroughputSource):
            raise ProfileError(f"source must be a ThroughputSource, got {self.source!r}")


@dataclass(frozen=True, slots=True)
class ComputeProfile:
    throughput: tuple[ThroughputEstimate, ...] = ()


class LinkSource(Enum):
    """Where a link figure comes from (values match ``eddl.v1.LinkSource``)."""

    PROBE = 1
    PASSIVE = 2


@dataclass(frozen=True, slots=True)
class LinkEstimate:
    """One link from this node to ``peer``; bandwidths are payload bytes per second."""

    peer: str
    rtt_seconds: float | None
    upload_bytes_per_second: float | None
    download_bytes_per_second: float | None
    source: LinkSource
    measured_at: float
    confidence: float = 1.0
    observations: int = 1

    def __post_init__(self) -> None:
        if not self.peer:
            raise ProfileError("peer must not be empty")
        _finite("rtt_seconds", self.rtt_seconds)
        _finite("upload_bytes_per_second", self.upload_bytes_per_second)
        _finite("download_bytes_per_second", self.download_bytes_per_second)
        _finite("measured_at", self.measured_at)
        _finite("confidence", self.confidence, high=1.0)
        _count("observations", self.observations)
        if not isinstance(self.source, LinkSource):
            raise ProfileError(f"source must be a LinkSource, got {self.source!r}")


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    links: tuple[LinkEstimate, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything a node reports about itself."""

    static: StaticProfile
    dynamic: DynamicProfile | None = None
    compute: ComputeProfile = field(default_factory=ComputeProfile)
    network: NetworkProfile = field(default_factory=NetworkProfile)
