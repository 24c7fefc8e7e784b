"""What a node can run: the capabilities of microcontrollers and the job fit rule.

Python workers (``eddl.learn``) run every algorithm. A microcontroller behind a gateway runs
only the job algorithms its gateway can translate (TIFeD, full network or single layer) and
only models that fit its static arena; :class:`McuCapabilities` holds what its gateway
reported (the ``McuProfile`` of its join, validated) and :func:`unable` is the one rule the
leader applies, at submission and before handing out a task. The arena rule is the host mirror
of the firmware's plan (:func:`eddl.mcu.plan.tifed_fit`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from eddl.leader.errors import InvalidArgumentError
from eddl.learn.metaoptions import META_ALGORITHMS
from eddl.mcu.metaplan import meta_fit
from eddl.mcu.plan import MCU_ALGORITHMS, tifed_fit
from eddl.mcu.protocol import MAX_LAYERS
from eddl.proto.v1 import profile_pb2

if TYPE_CHECKING:
    from eddl.leader.membership import Node

__all__ = ["McuCapabilities", "describe_node", "trainable_layers", "unable"]


@dataclass(frozen=True)
class McuCapabilities:
    """A microcontroller as its gateway reported it; invalid values raise on construction.

    ``arena_bytes`` is the static arena models are allocated in (what a job must fit),
    ``algorithms`` the job algorithms the device runs through its gateway, ``max_layers`` the
    deepest network its firmware holds, ``float_samples`` whether its firmware takes float32
    samples (HELLO's flag; sine and presence jobs need it). Rates are 0 when the gateway has
    not measured them.
    An empty ``algorithms`` is allowed (firmware without the integer kernels): such a device
    is a member that no job suits, and submissions say so.
    """

    gateway_id: str
    device: str
    board: str
    arena_bytes: int
    algorithms: tuple[str, ...]
    max_layers: int
    firmware_version: str = ""
    ram_bytes: int = 0
    flash_bytes: int = 0
    max_payload: int = 0
    tick_hz: int = 0
    link_bytes_per_second: float = 0.0
    ticks_per_sample: float = 0.0
    benchmark_model: str = ""
    max_buffer: int = 0
    float_samples: bool = False

    def __post_init__(self) -> None:
        _require(bool(self.gateway_id.strip()), "mcu.gateway_id is required")
        _require(bool(self.board.strip()), "mcu.board is required")
        _require(self.arena_bytes > 0, f"mcu.arena_bytes must be > 0, got {self.arena_bytes}")
        _require(
            self.ram_bytes == 0 or self.arena_bytes <= self.ram_bytes,
            f"mcu.arena_bytes {self.arena_bytes} exceeds mcu.ram_bytes {self.ram_bytes}",
        )
        unknown = sorted(set(self.algorithms) - set(MCU_ALGORITHMS))
        _require(
            not unknown,
            f"mcu.algorithms {unknown} unknown; a device runs {', '.join(MCU_ALGORITHMS)}",
        )
        _require(
            len(set(self.algorithms)) == len(self.algorithms),
            f"mcu.algorithms lists a name twice: {list(self.algorithms)}",
        )
        _require(
            1 <= self.max_layers <= MAX_LAYERS,
            f"mcu.max_layers must be 1..{MAX_LAYERS}, got {self.max_layers}",
        )
        for name in ("link_bytes_per_second", "ticks_per_sample"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"mcu.{name} must be finite and >= 0")

    @classmethod
    def from_proto(cls, mcu: profile_pb2.McuProfile) -> McuCapabilities:
        """The validated capabilities of an ``McuProfile`` (:class:`InvalidArgumentError`)."""
        return cls(
            gateway_id=mcu.gateway_id,
            device=mcu.device,
            board=mcu.board,
            arena_bytes=int(mcu.arena_bytes),
            algorithms=tuple(mcu.algorithms),
            max_layers=int(mcu.max_layers),
            firmware_version=mcu.firmware_version,
            ram_bytes=int(mcu.ram_bytes),
            flash_bytes=int(mcu.flash_bytes),
            max_payload=int(mcu.max_payload),
            tick_hz=int(mcu.tick_hz),
            link_bytes_per_second=float(mcu.link_bytes_per_second),
            ticks_per_sample=float(mcu.ticks_per_sample),
            benchmark_model=mcu.benchmark_model,
            max_buffer=int(mcu.max_buffer),
            float_samples=bool(mcu.float_samples),
        )

    def fit(self, algorithm: str, model: Mapping[str, Any], hyper: Mapping[str, Any]) -> str | None:
        """Why this device cannot run the job, or None when it can."""
        if algorithm in META_ALGORITHMS:  # the inner loop on the lsgd kernel
            return meta_fit(
                algorithm,
                model,
                hyper,
                arena_bytes=self.arena_bytes,
                algorithms=self.algorithms,
                float_samples=self.float_samples,
            )
        return tifed_fit(
            algorithm,
            model,
            hyper,
            arena_bytes=self.arena_bytes,
            algorithms=self.algorithms,
            max_layers=self.max_layers,
            float_samples=self.float_samples,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["algorithms"] = list(self.algorithms)
        return out


def unable(
    node: Node, algorithm: str, model: Mapping[str, Any], hyper: Mapping[str, Any]
) -> str | None:
    """Why ``node`` cannot run a job of ``algorithm`` on ``model``, or None when it can.

    ``model`` is the job's resolved model (``JobRuntime.info["model"]``), not the spec's
    possibly empty table: a device must fit the network the job really trains.
    """
    if node.mcu is None:
        return None  # a Python worker runs every algorithm of eddl.learn
    return node.mcu.fit(algorithm, model, hyper)


def trainable_layers(
    node: Node,
    algorithm: str,
    model: Mapping[str, Any],
    hyper: Mapping[str, Any],
    num_layers: int,
) -> list[int]:
    """The layers ``node`` can train in single-layer mode.

    A single-layer client still runs the whole forward pass and the output error that drives
    DFA, so its arena holds the whole network: a layer fits exactly when its network does, and
    a node trains either every layer or none.
    """
    return [] if unable(node, algorithm, model, hyper) else list(range(num_layers))


def describe_node(node: Node) -> str:
    """``node_id`` with its kind, for messages: ``pi1.mcu0 (mcu ram64)`` or ``w1 (worker)``."""
    if node.mcu is None:
        return f"{node.node_id} ({node.role.value})"
    return f"{node.node_id} (mcu {node.mcu.board})"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidArgumentError(message)
