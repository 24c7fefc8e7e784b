"""``make_rule``: build an aggregation rule by name from plain (config-file) values."""

from __future__ import annotations

from collections.abc import Callable

from eddl.learn.aggregation.adaptive import FedAdam, FedYogi
from eddl.learn.aggregation.base import AggregationError, AggregationRule
from eddl.learn.aggregation.fedasync import EDDLMix, FedAsync
from eddl.learn.aggregation.fedavg import FedAvg
from eddl.learn.aggregation.fedbuff import AsyncDelta, FedBuff
from eddl.learn.aggregation.folds import FoldedFedAsync
from eddl.learn.aggregation.intmean import IntMean
from eddl.learn.aggregation.reptile import Reptile
from eddl.learn.aggregation.robust import RobustMean
from eddl.learn.aggregation.serveropt import ServerOptimizer, ServerSGD
from eddl.learn.aggregation.staleness import make_staleness

__all__ = ["BASE_LOOKUP_RULES", "RULE_NAMES", "SERVER_OPT_NAMES", "make_rule"]

_STALENESS_KEYS = ("staleness", "staleness_a", "staleness_b")

# Server optimizer settings, given flat so that a TOML table can hold them; each optimizer
# takes only its own (server_momentum is SGD's, the betas and tau the adaptive ones').
_SERVER_KEYS: dict[str, tuple[str, ...]] = {
    "sgd": ("server_lr", "server_momentum"),
    "adam": ("server_lr", "server_beta1", "server_beta2", "server_tau"),
    "yogi": ("server_lr", "server_beta1", "server_beta2", "server_tau"),
}
SERVER_OPT_NAMES: tuple[str, ...] = tuple(_SERVER_KEYS)
_ALL_SERVER_KEYS = ("server_opt", "server_lr", "server_momentum", *_SERVER_KEYS["adam"][1:])


def _server_optimizer(p: dict[str, object]) -> ServerOptimizer | None:
    """Pop the ``server_*`` keys from ``p``; ``None`` when none is given (the plain mean)."""
    given = {k: p.pop(k) for k in _ALL_SERVER_KEYS if k in p}
    if not given:
        return None
    name = given.pop("server_opt", "sgd")
    allowed = _SERVER_KEYS.get(name) if isinstance(name, str) else None
    if allowed is None:
        raise AggregationError(f"unknown server_opt {name!r}; known: {', '.join(SERVER_OPT_NAMES)}")
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise AggregationError(
            f"server_opt {name!r} takes no {extra}; it takes: {', '.join(allowed)}"
        )
    kwargs = {k.removeprefix("server_"): v for k, v in given.items()}
    if name == "sgd":
        return ServerSGD(**kwargs)  # type: ignore[arg-type]
    return (FedAdam if name == "adam" else FedYogi)(**kwargs)  # type: ignore[arg-type]


def _fedavg(p: dict[str, object]) -> AggregationRule:
    robust = p.pop("robust", None)
    if robust is not None:
        servers = sorted(k for k in p if k.startswith("server_"))
        if servers:
            raise AggregationError(f"robust aggregation takes no server optimizer ({servers})")
        if "sum_samples" in p:
            raise AggregationError("robust aggregation takes no sum_samples")
        return RobustMean(robust, **p)  # type: ignore[arg-type]
    if "trim" in p:
        raise AggregationError('trim applies to robust = "trimmed-mean" only')
    server = _server_optimizer(p)
    return FedAvg(server=server, **p)  # type: ignore[arg-type]


def _intmean(p: dict[str, object]) -> AggregationRule:
    server_keys = sorted(k for k in p if k.startswith("server_"))
    if server_keys:
        raise AggregationError(
            f"intmean keeps TIFeD's exact integer mean and takes no server optimizer "
            f"({', '.join(server_keys)}); server optimizers apply to float models (fedavg)"
        )
    return IntMean(**p)  # type: ignore[arg-type]


def _staleness_from(p: dict[str, object], default: str) -> None:
    """Replace the flat staleness keys in ``p`` by one ``Staleness`` object."""
    name = p.pop("staleness", default)
    p["staleness"] = make_staleness(
        name, a=p.pop("staleness_a", None), b=p.pop("staleness_b", None)
    )


def _reptile(p: dict[str, object]) -> AggregationRule:
    return Reptile(**p)  # type: ignore[arg-type]


def _fedasync(p: dict[str, object]) -> AggregationRule:
    _staleness_from(p, "polynomial")
    return FedAsync(**p)  # type: ignore[arg-type]


def _fedasync_folds(p: dict[str, object]) -> AggregationRule:
    if "base_lookup" not in p:
        raise AggregationError("fedasync-folds needs base_lookup, a callable version -> params")
    _staleness_from(p, "polynomial")
    return FoldedFedAsync(**p)  # type: ignore[arg-type]


def _fedbuff(p: dict[str, object]) -> AggregationRule:
    if "base_lookup" not in p:
        raise AggregationError("fedbuff needs base_lookup, a callable version -> params")
    _staleness_from(p, "polynomial")
    return FedBuff(**p)  # type: ignore[arg-type]


def _async_delta(p: dict[str, object]) -> AggregationRule:
    if "base_lookup" not in p:
        raise AggregationError("async-delta needs base_lookup, a callable version -> params")
    _staleness_from(p, "polynomial")
    return AsyncDelta(**p)  # type: ignore[arg-type]


def _eddl_mix(p: dict[str, object]) -> AggregationRule:
    # alpha and staleness are what define this rule: accepted only with their fixed values,
    # so that make_rule(**rule.describe()) works for it as for the others.
    fixed = {"alpha": 0.5, "staleness": "constant"}
    for key, value in fixed.items():
        if key in p and p.pop(key) != value:
            raise AggregationError(f"eddl-mix has {key} fixed to {value!r}")
    return EDDLMix(**p)  # type: ignore[arg-type]


_RULES: dict[str, tuple[Callable[[dict[str, object]], AggregationRule], tuple[str, ...]]] = {
    "fedavg": (_fedavg, ("allow_partial", "robust", "trim", "sum_samples", *_ALL_SERVER_KEYS)),
    "intmean": (_intmean, ("allow_partial", *_ALL_SERVER_KEYS)),
    "reptile": (_reptile, ("meta_lr", "allow_partial", "schedule")),
    "fedasync": (_fedasync, ("alpha", *_STALENESS_KEYS, "allow_partial")),
    "fedbuff": (
        _fedbuff,
        (
            "base_lookup",
            "buffer_size",
            "server_lr",
            *_STALENESS_KEYS,
            "weight_by_samples",
            "allow_partial",
            "sum_samples",
        ),
    ),
    "eddl-mix": (_eddl_mix, ("alpha", "staleness", "allow_partial")),
    "async-delta": (
        _async_delta,
        ("base_lookup", "server_lr", *_STALENESS_KEYS, "allow_partial"),
    ),
    "fedasync-folds": (
        _fedasync_folds,
        ("base_lookup", "alpha", *_STALENESS_KEYS, "max_gain", "allow_partial"),
    ),
}

RULE_NAMES: tuple[str, ...] = tuple(_RULES)
#: The rules that compute deltas against the base model of an update's version.
BASE_LOOKUP_RULES: tuple[str, ...] = ("fedbuff", "async-delta", "fedasync-folds")


def make_rule(name: str, **params: object) -> AggregationRule:
    """Build the rule called ``name`` with ``params``; unknown names or keys are refused.

    Parameters are the rule's keyword arguments, with a staleness function given flat as
    ``staleness`` ("constant" | "polynomial" | "hinge"), ``staleness_a`` and ``staleness_b``
    so that a TOML table can hold them, and ``fedavg``'s server optimizer flat as ``server_opt``
    ("sgd" | "adam" | "yogi"), ``server_lr``, ``server_momentum`` (sgd), ``server_beta1``,
    ``server_beta2``, ``server_tau`` (adam, yogi), or ``sum_samples`` (summed deltas up to that
    many samples a round, :class:`FedAvg`). Every value is checked; errors are
    :class:`AggregationError`.
    """
    entry = _RULES.get(name)
    if entry is None:
        raise AggregationError(f"unknown aggregation rule {name!r}; known: {', '.join(RULE_NAMES)}")
    build, allowed = entry
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise AggregationError(
            f"aggregation rule {name!r} takes no parameter(s) {unknown}; "
            f"it takes: {', '.join(allowed)}"
        )
    try:
        return build(dict(params))
    except TypeError as exc:
        # A wrong type for an object-valued parameter (base_lookup, staleness).
        raise AggregationError(f"aggregation rule {name!r}: {exc}") from exc
