"""``make_rule``: build an aggregation rule by name from plain (config-file) values."""

from __future__ import annotations

from collections.abc import Callable

from eddl.learn.aggregation.base import AggregationError, AggregationRule
from eddl.learn.aggregation.fedasync import EDDLMix, FedAsync
from eddl.learn.aggregation.fedavg import FedAvg
from eddl.learn.aggregation.fedbuff import FedBuff
from eddl.learn.aggregation.intmean import IntMean
from eddl.learn.aggregation.reptile import Reptile
from eddl.learn.aggregation.staleness import make_staleness

__all__ = ["RULE_NAMES", "make_rule"]

_STALENESS_KEYS = ("staleness", "staleness_a", "staleness_b")


def _fedavg(p: dict[str, object]) -> AggregationRule:
    return FedAvg(**p)  # type: ignore[arg-type]


def _intmean(p: dict[str, object]) -> AggregationRule:
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


def _fedbuff(p: dict[str, object]) -> AggregationRule:
    if "base_lookup" not in p:
        raise AggregationError("fedbuff needs base_lookup, a callable version -> params")
    _staleness_from(p, "polynomial")
    return FedBuff(**p)  # type: ignore[arg-type]


def _eddl_mix(p: dict[str, object]) -> AggregationRule:
    # alpha and staleness are what define this rule: accepted only with their fixed values,
    # so that make_rule(**rule.describe()) works for it as for the others.
    fixed = {"alpha": 0.5, "staleness": "constant"}
    for key, value in fixed.items():
        if key in p and p.pop(key) != value:
            raise AggregationError(f"eddl-mix has {key} fixed to {value!r}")
    return EDDLMix(**p)  # type: ignore[arg-type]


_RULES: dict[str, tuple[Callable[[dict[str, object]], AggregationRule], tuple[str, ...]]] = {
    "fedavg": (_fedavg, ("allow_partial",)),
    "intmean": (_intmean, ("allow_partial",)),
    "reptile": (_reptile, ("meta_lr", "allow_partial")),
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
        ),
    ),
    "eddl-mix": (_eddl_mix, ("alpha", "staleness", "allow_partial")),
}

RULE_NAMES: tuple[str, ...] = tuple(_RULES)


def make_rule(name: str, **params: object) -> AggregationRule:
    """Build the rule called ``name`` with ``params``; unknown names or keys are refused.

    Parameters are the rule's keyword arguments, with a staleness function given flat as
    ``staleness`` ("constant" | "polynomial" | "hinge"), ``staleness_a`` and ``staleness_b``
    so that a TOML table can hold them. Every value is checked; errors are
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
