"""Aggregation rules: how client updates become the next global model.

Modules:

* ``base``      ``ClientUpdate``, ``AggregationError`` and the ``SyncRule`` / ``AsyncRule``
  interfaces the leader programs against.
* ``checks``    validation of updates and versions; casting float64 results back to a dtype;
  the exact truncating integer mean.
* ``staleness`` staleness functions S(s): constant, polynomial, hinge (FedAsync's).
* ``state``     ``RuleState``: what a rule keeps between versions (moments), for checkpoints.
* ``serveropt`` server optimizers on a round's mean delta: a server rate, momentum (FedAvgM).
* ``adaptive``  FedAdam and FedYogi server optimizers (Reddi et al.).
* ``fedavg``    FedAvg, the sample-weighted mean, optionally through a server optimizer (sync).
* ``intmean``   TIFeD's truncating integer mean, per parameter name (sync).
* ``reptile``   Reptile's outer step ``θ + ε·Σ w_i(φ_i − θ)`` (sync; ε = 1 is FedAvg).
* ``fedasync``  FedAsync and EDDL's ``(global + incoming) / 2`` mix (async, unbuffered).
* ``fedbuff``   FedBuff, K buffered staleness-weighted deltas; AsyncDelta, K = 1 (async).
* ``folds``     FedAsync that counts a sub-leader's group update for the updates it folds.
* ``robust``    coordinate-wise median and trimmed mean, fedavg's ``robust`` option (sync).
* ``registry``  ``make_rule(name, **params)``.
"""

from eddl.learn.aggregation.adaptive import FedAdam, FedYogi
from eddl.learn.aggregation.base import (
    MAX_FOLDS,
    AggregationError,
    AggregationRule,
    AsyncRule,
    ClientUpdate,
    SyncRule,
)
from eddl.learn.aggregation.fedasync import EDDLMix, FedAsync
from eddl.learn.aggregation.fedavg import FedAvg
from eddl.learn.aggregation.fedbuff import AsyncDelta, BaseLookup, FedBuff
from eddl.learn.aggregation.folds import FoldedFedAsync
from eddl.learn.aggregation.intmean import IntMean
from eddl.learn.aggregation.registry import (
    BASE_LOOKUP_RULES,
    RULE_NAMES,
    SERVER_OPT_NAMES,
    make_rule,
)
from eddl.learn.aggregation.reptile import Reptile
from eddl.learn.aggregation.robust import RobustMean
from eddl.learn.aggregation.serveropt import ServerOptimizer, ServerSGD
from eddl.learn.aggregation.staleness import (
    STALENESS_NAMES,
    Constant,
    Hinge,
    Polynomial,
    Staleness,
    make_staleness,
)
from eddl.learn.aggregation.state import RuleState

__all__ = [
    "BASE_LOOKUP_RULES",
    "MAX_FOLDS",
    "RULE_NAMES",
    "SERVER_OPT_NAMES",
    "STALENESS_NAMES",
    "AggregationError",
    "AggregationRule",
    "AsyncDelta",
    "AsyncRule",
    "BaseLookup",
    "ClientUpdate",
    "Constant",
    "EDDLMix",
    "FedAdam",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "FedYogi",
    "FoldedFedAsync",
    "Hinge",
    "IntMean",
    "Polynomial",
    "Reptile",
    "RobustMean",
    "RuleState",
    "ServerOptimizer",
    "ServerSGD",
    "Staleness",
    "SyncRule",
    "make_rule",
    "make_staleness",
]
