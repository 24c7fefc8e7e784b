"""Aggregation rules: how client updates become the next global model.

Modules:

* ``base``      ``ClientUpdate``, ``AggregationError`` and the ``SyncRule`` / ``AsyncRule``
  interfaces the leader programs against.
* ``checks``    validation of updates and versions; casting float64 results back to a dtype;
  the exact truncating integer mean.
* ``staleness`` staleness functions S(s): constant, polynomial, hinge (FedAsync's).
* ``fedavg``    FedAvg, the sample-weighted mean (sync).
* ``intmean``   TIFeD's truncating integer mean, per parameter name (sync).
* ``reptile``   Reptile's outer step ``θ + ε·Σ w_i(φ_i − θ)`` (sync; ε = 1 is FedAvg).
* ``fedasync``  FedAsync and EDDL's ``(global + incoming) / 2`` mix (async, unbuffered).
* ``fedbuff``   FedBuff, K buffered staleness-weighted deltas (async).
* ``registry``  ``make_rule(name, **params)``.
"""

from eddl.learn.aggregation.base import (
    AggregationError,
    AggregationRule,
    AsyncRule,
    ClientUpdate,
    SyncRule,
)
from eddl.learn.aggregation.fedasync import EDDLMix, FedAsync
from eddl.learn.aggregation.fedavg import FedAvg
from eddl.learn.aggregation.fedbuff import BaseLookup, FedBuff
from eddl.learn.aggregation.intmean import IntMean
from eddl.learn.aggregation.registry import RULE_NAMES, make_rule
from eddl.learn.aggregation.reptile import Reptile
from eddl.learn.aggregation.staleness import (
    STALENESS_NAMES,
    Constant,
    Hinge,
    Polynomial,
    Staleness,
    make_staleness,
)

__all__ = [
    "RULE_NAMES",
    "STALENESS_NAMES",
    "AggregationError",
    "AggregationRule",
    "AsyncRule",
    "BaseLookup",
    "ClientUpdate",
    "Constant",
    "EDDLMix",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "Hinge",
    "IntMean",
    "Polynomial",
    "Reptile",
    "Staleness",
    "SyncRule",
    "make_rule",
    "make_staleness",
]
