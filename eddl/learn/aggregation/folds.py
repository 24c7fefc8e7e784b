"""FedAsync for a root fed by sub-leaders: a group's update counts for the updates it folds.

A sub-leader folds the updates of its ``m`` members into their sample-weighted mean and sends
that upward as one update. The mean's step ``x_in - x_b`` (from the base version ``x_b`` the
group started from) is about one device's step with less noise, so FedAsync, which weights an
update by its staleness only, gives a group of 16 devices the pull of one device: the root
needs as many versions to reach a target as with single devices, whatever each version folds.

:class:`FoldedFedAsync` keeps FedAsync's mix and counts the group's own step ``g`` times::

    x <- x + a (x_in - x) + a (g - 1) (x_in - x_b),   a = alpha * S(s),   g = min(sqrt(m), max_gain)

``g = 1`` (``m = 1``, a device's own update) is FedAsync exactly. ``sqrt(m)``: the mean of
``m`` steps has ``1/sqrt(m)`` of one step's noise, so it can be taken ``sqrt(m)`` times as far
at the same noise (summing the ``m`` steps, ``g = m``, overshoots: in a numpy simulation of
four groups of 16 feeding one root, ``bench/group_weight.py``, 90% took 39 and 50 root versions
with ``g = 4``, 107 and 116 with FedAsync, 282 and 263 with ``g = 16``; docs/aggregation.md).
``max_gain`` bounds what any update declaring many folds can do.
"""

from __future__ import annotations

import math

import numpy as np

from eddl.learn.aggregation.base import AggregationError, ClientUpdate
from eddl.learn.aggregation.checks import (
    cast_back,
    check_global,
    check_real,
    check_single,
    check_version,
)
from eddl.learn.aggregation.fedasync import FedAsync
from eddl.learn.aggregation.fedbuff import BaseLookup, base_model
from eddl.learn.aggregation.staleness import Staleness
from eddl.learn.params import Params

__all__ = ["MAX_GAIN", "FoldedFedAsync"]

MAX_GAIN = 64.0  # the largest max_gain a job may set


class FoldedFedAsync(FedAsync):
    """FedAsync whose update of ``m`` folded updates also takes its own step ``g - 1`` more
    times, ``g = min(sqrt(m), max_gain)``; needs the base models of recent versions."""

    name = "fedasync-folds"

    def __init__(
        self,
        *,
        base_lookup: BaseLookup,
        alpha: float = 0.6,
        staleness: Staleness | None = None,
        max_gain: float = 4.0,
        allow_partial: bool = False,
    ) -> None:
        super().__init__(alpha=alpha, staleness=staleness, allow_partial=allow_partial)
        self.max_gain = check_real(max_gain, "max_gain", low=1.0, high=MAX_GAIN, low_open=False)
        if not callable(base_lookup):
            raise AggregationError(f"{self.name} needs base_lookup, a callable version -> params")
        self.base_lookup = base_lookup

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "name": self.name, "max_gain": self.max_gain}

    def gain(self, folds: int) -> float:
        """How many steps an update of ``folds`` folded updates takes: ``min(sqrt, max_gain)``."""
        return min(math.sqrt(max(1, folds)), self.max_gain)

    def submit(self, global_params: Params, update: ClientUpdate, version: int) -> Params:
        v = check_version(version)
        check_global(global_params)
        s = check_single(global_params, update, v, allow_partial=self.allow_partial, what="update")
        g = self.gain(update.folds)
        if g == 1.0:
            return super().submit(global_params, update, version)
        step_of = "the group's own step"
        base = base_model(self.base_lookup, update.base_version, global_params, step_of)
        a = self.mixing_weight(s)
        out: Params = {}
        for name, current in global_params.items():
            incoming = update.params.get(name)
            if incoming is None:
                out[name] = current.copy()
                continue
            x = current.astype(np.float64)
            x_in = incoming.astype(np.float64)
            step = a * (x_in - x) + (a * (g - 1.0)) * (x_in - base[name].astype(np.float64))
            out[name] = cast_back(x + step, current.dtype, name)
        return out
