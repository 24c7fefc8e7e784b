"""``RuleState``: what a rule carries from one version to the next (a server optimizer's moments).

The leader checkpoints it next to the model, so a resumed job takes the very step it would have
taken without the restart. :meth:`RuleState.to_dict` is JSON-safe (arrays as base64 of their
little-endian float64 bytes) so it fits the checkpoint's metadata; :meth:`RuleState.from_dict`
checks everything it reads and refuses a malformed record with :class:`AggregationError`.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eddl.learn.aggregation.base import AggregationError, _is_int

__all__ = ["RuleState"]

_MAX_ELEMENTS = 1 << 31  # far above any model a job may hold (the leader bounds model bytes)


@dataclass(frozen=True, eq=False)
class RuleState:
    """``steps`` taken so far and float64 ``arrays`` by key (``"m/W0"``, ``"v/W0"``...).

    Empty for rules that keep nothing between versions. The arrays are the rule's own copies:
    :meth:`AggregationRule.state` returns new arrays and ``load_state`` copies what it is given.
    """

    steps: int = 0
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _is_int(self.steps) or self.steps < 0:
            raise AggregationError(f"rule state: steps must be an int >= 0, got {self.steps!r}")
        if not isinstance(self.arrays, Mapping):
            raise AggregationError("rule state: arrays must be a mapping of names to arrays")
        for key, arr in self.arrays.items():
            if not isinstance(key, str) or not key:
                raise AggregationError(f"rule state: keys must be names, got {key!r}")
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float64:
                raise AggregationError(f"rule state: {key} must be a float64 array")
            if not np.isfinite(arr).all():
                raise AggregationError(f"rule state: {key} holds NaN or Inf")

    @property
    def empty(self) -> bool:
        return self.steps == 0 and not self.arrays

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"steps": n, "arrays": {key: {"shape": [...], "data": base64}}}``."""
        return {
            "steps": int(self.steps),
            "arrays": {
                key: {
                    "shape": list(arr.shape),
                    "data": base64.b64encode(arr.astype("<f8").tobytes()).decode("ascii"),
                }
                for key, arr in self.arrays.items()
            },
        }

    @classmethod
    def from_dict(cls, raw: object) -> RuleState:
        """Read :meth:`to_dict`'s output back; anything else is an :class:`AggregationError`."""
        if not isinstance(raw, Mapping) or set(raw) != {"steps", "arrays"}:
            raise AggregationError("rule state: expected a mapping with steps and arrays")
        arrays_raw = raw["arrays"]
        if not isinstance(arrays_raw, Mapping):
            raise AggregationError("rule state: arrays must be a mapping")
        arrays: dict[str, np.ndarray] = {}
        for key, item in arrays_raw.items():
            arrays[str(key)] = _array(str(key), item)
        return cls(steps=raw["steps"], arrays=arrays)


def _array(key: str, item: object) -> np.ndarray:
    if not isinstance(item, Mapping) or set(item) != {"shape", "data"}:
        raise AggregationError(f"rule state: {key} must hold shape and data")
    shape, data = item["shape"], item["data"]
    if not isinstance(shape, list | tuple) or not all(_is_int(n) and n >= 0 for n in shape):
        raise AggregationError(f"rule state: {key} has a malformed shape {shape!r}")
    count = math.prod(int(n) for n in shape)
    if count > _MAX_ELEMENTS:
        raise AggregationError(f"rule state: {key} has {count} elements, too many")
    if not isinstance(data, str):
        raise AggregationError(f"rule state: {key} data must be base64 text")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise AggregationError(f"rule state: {key} data is not base64: {exc}") from exc
    if len(raw) != 8 * count:
        raise AggregationError(
            f"rule state: {key} holds {len(raw)} bytes, shape {list(shape)} needs {8 * count}"
        )
    return np.frombuffer(raw, dtype="<f8").astype(np.float64).reshape([int(n) for n in shape])
