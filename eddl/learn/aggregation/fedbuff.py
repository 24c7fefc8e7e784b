"""FedBuff (Nguyen et al.): buffer K client deltas, then apply their staleness-weighted mean;
``AsyncDelta``: the same with K = 1, each delta applied as it arrives.

A delta is ``params - base`` where ``base`` is the global model the client started from. The
rule computes deltas itself, from full client parameters, so a caller cannot mix up models
and deltas: it gets the base of an older version through ``base_lookup(version)``, a callable
the leader provides over the versions it keeps; an update based on the current version uses
the ``global_params`` of the call. A base version the lookup cannot provide (returns ``None``
or raises ``LookupError``) refuses the update rather than mixing it against the wrong base.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from eddl.learn.aggregation.base import AggregationError, AsyncRule, ClientUpdate
from eddl.learn.aggregation.checks import (
    cast_back,
    check_bool,
    check_global,
    check_positive_int,
    check_real,
    check_single,
    check_version,
)
from eddl.learn.aggregation.fedavg import SUM_SAMPLES_MAX
from eddl.learn.aggregation.staleness import Polynomial, Staleness
from eddl.learn.params import Params, ParamsError, check_like

__all__ = ["AsyncDelta", "BaseLookup", "FedBuff", "base_model"]

BaseLookup = Callable[[int], Mapping[str, np.ndarray] | None]


class FedBuff(AsyncRule):
    """Buffered asynchronous aggregation, as in the paper's Algorithm 1.

    Each update contributes its delta ``d_i`` scaled by its staleness weight ``S(s_i)``; when
    ``buffer_size`` (K) updates are in, ``x = x + server_lr * sum_i c_i S(s_i) d_i / sum_i c_i``
    per name, over the updates holding that name, and the buffer empties. ``c_i = 1`` (the
    paper's ``1/K``) or ``num_samples`` with ``weight_by_samples``. The staleness weight is not
    normalised away: a buffer of stale deltas moves the model less than a fresh one, which is
    the paper's point. The default ``S`` is ``1/sqrt(1+s)``.

    With ``sum_samples = B > 0`` the buffer's staleness-weighted deltas are summed rather than
    averaged, up to ``B`` samples: ``x = x + server_lr · c · sum_i S(s_i) d_i`` with
    ``c = clamp(B / sum_i n_i, 1/K, 1)``, as FedAvg's ``sum_samples`` does for a sync round (so
    ``c_i = 1``: ``weight_by_samples`` is refused with it).

    The buffer keeps running float64 sums, not the K deltas, so its memory does not grow
    with K. Integer models are updated in float64, truncated toward zero and saturated at
    their dtype's range; a float result that overflows its dtype is refused.
    """

    name = "fedbuff"

    def __init__(
        self,
        *,
        base_lookup: BaseLookup,
        buffer_size: int = 10,
        server_lr: float = 1.0,
        staleness: Staleness | None = None,
        weight_by_samples: bool = False,
        allow_partial: bool = False,
        sum_samples: int = 0,
    ) -> None:
        if not callable(base_lookup):
            raise AggregationError("fedbuff needs base_lookup, a callable version -> params")
        self.base_lookup = base_lookup
        self.buffer_size = check_positive_int(buffer_size, "buffer_size", minimum=1)
        self.server_lr = check_real(server_lr, "server_lr", low=0.0, high=1e6, low_open=True)
        if staleness is None:
            staleness = Polynomial(a=0.5)
        if not isinstance(staleness, Staleness):
            raise TypeError(f"staleness must be a Staleness, got {type(staleness).__name__}")
        self.staleness = staleness
        self.weight_by_samples = check_bool(weight_by_samples, "weight_by_samples")
        self.allow_partial = check_bool(allow_partial, "allow_partial")
        self.sum_samples = check_positive_int(sum_samples, "sum_samples", minimum=0)
        if self.sum_samples > SUM_SAMPLES_MAX:
            raise AggregationError(f"sum_samples must be <= {SUM_SAMPLES_MAX}")
        if self.sum_samples and self.weight_by_samples:
            raise AggregationError("sum_samples sums deltas: weight_by_samples does not apply")
        # Per name: sum_i c_i S(s_i) d_i, sum_i c_i and sum_i n_i.
        self._sums: dict[str, np.ndarray] = {}
        self._weights: dict[str, float] = {}
        self._samples: dict[str, int] = {}
        self._count = 0

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "buffer_size": self.buffer_size,
            "server_lr": self.server_lr,
            "staleness": self.staleness.name,
            **self.staleness.params(),
            "weight_by_samples": self.weight_by_samples,
            "allow_partial": self.allow_partial,
            **({"sum_samples": self.sum_samples} if self.sum_samples else {}),
        }

    def pending(self) -> int:
        return self._count

    def update_weight(self, update: ClientUpdate) -> float:
        """``c_i``: the update's share of the buffer's mean (1, or its sample count)."""
        return float(update.num_samples) if self.weight_by_samples else 1.0

    def submit(self, global_params: Params, update: ClientUpdate, version: int) -> Params | None:
        v = check_version(version)
        check_global(global_params)
        s = check_single(global_params, update, v, allow_partial=self.allow_partial, what="update")
        base: Mapping[str, np.ndarray] = global_params
        if s:
            base = base_model(self.base_lookup, update.base_version, global_params, "its delta")
        weight = self.update_weight(update)
        scale = weight * self.staleness(s)
        # New dicts and arrays: the committed buffer is untouched until nothing can fail.
        sums = dict(self._sums)
        weights = dict(self._weights)
        samples = dict(self._samples)
        for name, arr in update.params.items():
            delta = arr.astype(np.float64) - base[name].astype(np.float64)
            sums[name] = sums[name] + scale * delta if name in sums else scale * delta
            weights[name] = weights.get(name, 0.0) + weight
            samples[name] = samples.get(name, 0) + int(update.num_samples)
        count = self._count + 1
        if count < self.buffer_size:
            self._sums, self._weights, self._count = sums, weights, count
            self._samples = samples
            return None
        result = self._apply(global_params, sums, weights, samples)
        self._clear()
        return result

    def flush(self, global_params: Params) -> Params | None:
        if self._count == 0:
            return None
        check_global(global_params)
        names = sorted(set(self._sums) - set(global_params))
        if names:
            raise AggregationError(f"flush: buffered parameter(s) {names} not in the global model")
        for name, acc in self._sums.items():
            if acc.shape != global_params[name].shape:
                raise AggregationError(
                    f"flush: {name} has shape {global_params[name].shape}, buffered {acc.shape}"
                )
        result = self._apply(global_params, self._sums, self._weights, self._samples)
        self._clear()
        return result

    def _clear(self) -> None:
        self._sums, self._weights, self._count, self._samples = {}, {}, 0, {}

    def _apply(
        self,
        global_params: Params,
        sums: Mapping[str, np.ndarray],
        weights: Mapping[str, float],
        samples: Mapping[str, int],
    ) -> Params:
        out: Params = {}
        for name, current in global_params.items():
            if name not in sums:
                out[name] = current.copy()
                continue
            if self.sum_samples:
                # c_i = 1, so weights[name] counts the deltas summed for this name.
                share = max(1.0 / weights[name], min(1.0, self.sum_samples / max(samples[name], 1)))
            else:
                share = 1.0 / weights[name]
            step = (self.server_lr * share) * sums[name]
            out[name] = cast_back(current.astype(np.float64) + step, current.dtype, name)
        return out


class AsyncDelta(FedBuff):
    """Each update's staleness-weighted delta applied at once to the current model:
    ``x ← x + server_lr · S(s) · (x_new − x_base)``. FedBuff with a buffer of one.

    Unlike FedAsync, which mixes the whole client model into the current one (and so pulls
    the model back toward the stale base an old update started from), only the client's own
    progress ``x_new − x_base`` is added.
    """

    name = "async-delta"

    def __init__(
        self,
        *,
        base_lookup: BaseLookup,
        server_lr: float = 1.0,
        staleness: Staleness | None = None,
        allow_partial: bool = False,
    ) -> None:
        super().__init__(
            base_lookup=base_lookup,
            buffer_size=1,
            server_lr=server_lr,
            staleness=staleness,
            allow_partial=allow_partial,
        )

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "server_lr": self.server_lr,
            "staleness": self.staleness.name,
            **self.staleness.params(),
            "allow_partial": self.allow_partial,
        }


def base_model(
    lookup: BaseLookup, base_version: int, global_params: Params, what: str
) -> Mapping[str, np.ndarray]:
    """The model of ``base_version`` from ``lookup``, shaped like ``global_params``; refused
    (``AggregationError``) when it is gone or unlike: ``what`` then cannot be computed."""
    try:
        base = lookup(base_version)
    except LookupError:
        base = None
    if base is None:
        raise AggregationError(
            f"update: base model version {base_version} is not available, so {what} "
            "cannot be computed"
        )
    try:
        check_like(global_params, base, what=f"base model version {base_version}")
    except ParamsError as exc:
        raise AggregationError(str(exc)) from exc
    return base
